/**
 * An HTTP/1.1 head as HTTP/2 fields, for both directions that cross between the two: a request
 * the handler built going to an HTTP/2 upstream (upstream/http2-stream.ts), and an answer going
 * to an HTTP/2 client (proxy/http2-front.ts).
 */
import type { OutgoingHttpHeaders } from 'node:http2';

/** Fields HTTP/2 forbids in a message (RFC 9113 §8.2.2). */
export const CONNECTION_SPECIFIC: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
]);

/**
 * The header lines of `head` (every line after the first, up to the blank one) added to
 * `fields`: names lower-cased, a repeated name as a list, the names in `drop` left out. Returns
 * the first line (request or status line).
 */
export function addHeadFields(head: string, fields: OutgoingHttpHeaders, drop: ReadonlySet<string>): string {
  const lines = head.split('\r\n');
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    if (line === '') break;
    const colon = line.indexOf(':');
    const name = line.slice(0, colon).toLowerCase();
    if (!drop.has(name)) addField(fields, name, line.slice(colon + 1).trim());
  }
  return lines[0];
}

/** One more value of `name`: a second one turns the field into a list. */
export function addField(fields: OutgoingHttpHeaders, name: string, value: string): void {
  const had = fields[name];
  fields[name] = had === undefined ? value : Array.isArray(had) ? [...had, value] : [String(had), value];
}
