/**
 * A small authoritative DNS server on a real UDP socket (127.0.0.1, port 0), for the tests of
 * DNS-discovered pools. It answers A, AAAA and SRV questions from a table the test changes at will,
 * NXDOMAIN for names it does not know.
 */
import { once } from 'node:events';
import * as dgram from 'node:dgram';
import { onCleanup } from './helpers';

export interface SrvRecord {
  priority: number;
  weight: number;
  port: number;
  target: string;
}

export interface DnsServer {
  address: string;
  a: Map<string, { addresses: string[]; ttl: number }>;
  aaaa: Map<string, { addresses: string[]; ttl: number }>;
  srv: Map<string, SrvRecord[]>;
  queries: number;
}

const TYPE_A = 1;
const TYPE_AAAA = 28;
const TYPE_SRV = 33;

export async function startDnsServer(): Promise<DnsServer> {
  const socket = dgram.createSocket('udp4');
  const state: DnsServer = { address: '', a: new Map(), aaaa: new Map(), srv: new Map(), queries: 0 };
  socket.on('message', (msg, rinfo) => {
    state.queries++;
    const reply = answer(msg, state);
    if (reply !== null) socket.send(reply, rinfo.port, rinfo.address);
  });
  socket.bind(0, '127.0.0.1');
  await once(socket, 'listening');
  state.address = `127.0.0.1:${socket.address().port}`;
  onCleanup(() => socket.close());
  return state;
}

function answer(query: Buffer, state: DnsServer): Buffer | null {
  if (query.length < 12) return null;
  let offset = 12;
  const labels: string[] = [];
  while (offset < query.length && query[offset] !== 0) {
    const len = query[offset];
    labels.push(query.toString('latin1', offset + 1, offset + 1 + len));
    offset += 1 + len;
  }
  offset++;
  const qtype = query.readUInt16BE(offset);
  const questionEnd = offset + 4;
  const name = labels.join('.').toLowerCase();
  const records: Buffer[] = [];
  let known = false;
  if (qtype === TYPE_A && state.a.has(name)) {
    known = true;
    const { addresses, ttl } = state.a.get(name)!;
    for (const addr of addresses) records.push(rr(TYPE_A, ttl, Buffer.from(addr.split('.').map(Number))));
  } else if (qtype === TYPE_AAAA && state.aaaa.has(name)) {
    known = true;
    const { addresses, ttl } = state.aaaa.get(name)!;
    for (const addr of addresses) records.push(rr(TYPE_AAAA, ttl, ipv6Bytes(addr)));
  } else if (qtype === TYPE_SRV && state.srv.has(name)) {
    known = true;
    for (const r of state.srv.get(name)!) {
      const head = Buffer.alloc(6);
      head.writeUInt16BE(r.priority, 0);
      head.writeUInt16BE(r.weight, 2);
      head.writeUInt16BE(r.port, 4);
      records.push(rr(TYPE_SRV, 30, Buffer.concat([head, encodeName(r.target)])));
    }
  }
  const header = Buffer.alloc(12);
  header.writeUInt16BE(query.readUInt16BE(0), 0); // id
  const rd = query[2] & 0x01;
  header.writeUInt16BE(0x8400 | (rd << 8) | (known ? 0 : 3), 2); // QR, AA, RD copied; NXDOMAIN if unknown
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(records.length, 6);
  return Buffer.concat([header, query.subarray(12, questionEnd), ...records]);
}

/** One answer record whose name points back at the question (offset 12). */
function rr(type: number, ttl: number, data: Buffer): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(0xc00c, 0);
  b.writeUInt16BE(type, 2);
  b.writeUInt16BE(1, 4); // IN
  b.writeUInt32BE(ttl, 6);
  b.writeUInt16BE(data.length, 10);
  return Buffer.concat([b, data]);
}

function encodeName(name: string): Buffer {
  const parts = name.split('.').filter((p) => p !== '');
  return Buffer.concat([
    ...parts.map((p) => Buffer.concat([Buffer.from([p.length]), Buffer.from(p, 'latin1')])),
    Buffer.from([0]),
  ]);
}

/** `::1` → its 16 bytes (a `::` run expanded). */
function ipv6Bytes(addr: string): Buffer {
  const [head, tail] = addr.split('::') as [string, string | undefined];
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
  return b;
}
