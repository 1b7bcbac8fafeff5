/** How an upstream's final response head frames its body, or why it cannot be trusted. */
import { isPlainChunked } from './parser';

/**
 * One pass over a final response's fields for its framing. A string: a Transfer-Encoding we
 * refuse. llhttp accepts repeated or listed ones in responses (`chunked, chunked`); we never send
 * TE, so the only coding an upstream may use is a single `chunked`, and anything else could frame
 * the body differently from how we read it, or change what it means. Otherwise a number: the
 * Content-Length to count in JS, or -1 to leave the body to llhttp (no Content-Length, a
 * Transfer-Encoding, or a value this does not read as plain digits; llhttp has already refused a
 * malformed or conflicting one).
 */
export function responseFraming(raw: readonly string[]): string | number {
  let te: string | null = null;
  let teFields = 0;
  let length = -1;
  let lengthFields = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i];
    if (n.length === 17 && n.toLowerCase() === 'transfer-encoding') {
      teFields++;
      te = raw[i + 1]!;
    } else if (n.length === 14 && n.toLowerCase() === 'content-length') {
      lengthFields++;
      const v = raw[i + 1].trim();
      length = v.length > 0 && v.length <= 15 && /^[0-9]+$/.test(v) ? Number(v) : -1;
    }
  }
  if (teFields > 0) {
    if (isPlainChunked(teFields, te)) return -1;
    return `upstream sent Transfer-Encoding ${JSON.stringify(te)}${teFields > 1 ? ' more than once' : ''}; only one "chunked" is accepted`;
  }
  return lengthFields === 1 ? length : -1;
}
