/**
 * HTTP/2 as raw frames (RFC 9113 §4), for the attacks a well-behaved client library will not
 * send: floods, resets, bad pseudo-headers, uppercase names. Header blocks use HPACK literals
 * without indexing or Huffman coding (RFC 7541 §6.2.2), which every decoder must accept.
 */
import * as net from 'node:net';

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export const enum FrameType {
  Data = 0,
  Headers = 1,
  RstStream = 3,
  Settings = 4,
  Ping = 6,
  Goaway = 7,
  WindowUpdate = 8,
  Continuation = 9,
}

export const END_STREAM = 0x1;
export const END_HEADERS = 0x4;

export function frame(type: FrameType, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

/** An HPACK integer with an n-bit prefix (RFC 7541 §5.1). */
function integer(value: number, prefixBits: number, first: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [first | value];
  const out = [first | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
}

/** A header block of literal fields, names sent exactly as given (uppercase included). */
export function headerBlock(fields: Array<[string, string]>): Buffer {
  const bytes: number[] = [];
  for (const [name, value] of fields) {
    bytes.push(0x00);
    bytes.push(...integer(Buffer.byteLength(name), 7, 0), ...Buffer.from(name));
    bytes.push(...integer(Buffer.byteLength(value), 7, 0), ...Buffer.from(value));
  }
  return Buffer.from(bytes);
}

export function settings(entries: Array<[number, number]> = []): Buffer {
  const payload = Buffer.alloc(entries.length * 6);
  entries.forEach(([id, value], i) => {
    payload.writeUInt16BE(id, i * 6);
    payload.writeUInt32BE(value, i * 6 + 2);
  });
  return frame(FrameType.Settings, 0, 0, payload);
}

export function rstStream(stream: number, code: number): Buffer {
  const payload = Buffer.alloc(4);
  payload.writeUInt32BE(code);
  return frame(FrameType.RstStream, 0, stream, payload);
}

/** A GET request's HEADERS frame, `extra` fields after the pseudo-headers. */
export function getRequest(stream: number, extra: Array<[string, string]> = [], endStream = true): Buffer {
  const block = headerBlock([
    [':method', 'GET'],
    [':scheme', 'http'],
    [':authority', 'localhost'],
    [':path', '/'],
    ...extra,
  ]);
  return frame(FrameType.Headers, END_HEADERS | (endStream ? END_STREAM : 0), stream, block);
}

export interface Received {
  type: FrameType;
  flags: number;
  stream: number;
  payload: Buffer;
}

/** A raw client: what it writes goes out as is; every frame the server sends is kept. */
export class RawH2 {
  readonly socket: net.Socket;
  readonly frames: Received[] = [];
  private buf = Buffer.alloc(0);
  closed = false;
  readonly ready: Promise<void>;

  constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.on('error', () => undefined);
    this.socket.on('close', () => (this.closed = true));
    this.socket.on('data', (d: Buffer) => this.onData(d));
    this.ready = new Promise((ok) => this.socket.once('connect', () => ok()));
    this.socket.write(Buffer.concat([PREFACE, settings()]));
  }

  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    while (this.buf.length >= 9) {
      const length = this.buf.readUIntBE(0, 3);
      if (this.buf.length < 9 + length) return;
      this.frames.push({
        type: this.buf[3],
        flags: this.buf[4],
        stream: this.buf.readUInt32BE(5) & 0x7fffffff,
        payload: this.buf.subarray(9, 9 + length),
      });
      this.buf = this.buf.subarray(9 + length);
    }
  }

  write(data: Buffer): boolean {
    return this.socket.write(data);
  }

  /** The GOAWAY's error code, once one came. */
  get goaway(): number | null {
    const g = this.frames.find((f) => f.type === FrameType.Goaway);
    return g === undefined ? null : g.payload.readUInt32BE(4);
  }

  /** RST_STREAM error codes by stream. */
  resets(): Map<number, number> {
    const out = new Map<number, number>();
    for (const f of this.frames) if (f.type === FrameType.RstStream) out.set(f.stream, f.payload.readUInt32BE(0));
    return out;
  }

  destroy(): void {
    this.socket.destroy();
  }
}
