/**
 * The fields of a response head that decide whether and how its body is filtered, the
 * negotiation of a content coding with the client's Accept-Encoding, and the head's fields
 * rewritten for a body that changed.
 */
/** The fields of a response head that decide whether and how its body is filtered. */
export interface HeadFacts {
  type: string;
  charset: BufferEncoding;
  encoding: string | null;
  length: number | null;
  noTransform: boolean;
  ranged: boolean;
}

export function headFacts(raw: readonly string[]): HeadFacts {
  const f: HeadFacts = { type: '', charset: 'utf8', encoding: null, length: null, noTransform: false, ranged: false };
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    const value = raw[i + 1];
    if (name === 'content-type') {
      const [type, ...params] = value.split(';');
      f.type = type.trim().toLowerCase();
      for (const p of params) {
        const [k, v] = p.split('=');
        if (k?.trim().toLowerCase() === 'charset') {
          const cs = v?.trim().replace(/^"|"$/g, '').toLowerCase();
          if (cs === 'iso-8859-1' || cs === 'latin1' || cs === 'us-ascii' || cs === 'ascii') f.charset = 'latin1';
        }
      }
    } else if (name === 'content-encoding') {
      const e = value.trim().toLowerCase();
      f.encoding = e === '' || e === 'identity' ? null : e;
    } else if (name === 'content-length') {
      f.length = Number(value);
    } else if (name === 'cache-control') {
      if (/(^|[\s,])no-transform($|[\s,])/i.test(value)) f.noTransform = true;
    } else if (name === 'content-range') {
      f.ranged = true;
    }
  }
  return f;
}

/**
 * The client's preferred encoding among `offered` (in server preference order for ties), by the
 * q-values of its Accept-Encoding (RFC 9110 §12.5.3); null when none is acceptable.
 */
export function negotiateEncoding(
  acceptEncoding: string | null,
  offered: readonly ('br' | 'gzip')[],
): 'br' | 'gzip' | null {
  if (acceptEncoding === null) return null;
  const q = new Map<string, number>();
  for (const part of acceptEncoding.split(',')) {
    const [token, ...params] = part.trim().split(';');
    const name = token.trim().toLowerCase();
    if (name === '') continue;
    let weight = 1;
    for (const p of params) {
      const m = /^\s*q\s*=\s*([01](?:\.\d{0,3})?)\s*$/i.exec(p);
      if (m) weight = Number(m[1]);
    }
    q.set(name, Math.max(q.get(name) ?? -1, weight));
  }
  let best: 'br' | 'gzip' | null = null;
  let bestQ = 0;
  for (const enc of offered) {
    const weight = q.get(enc) ?? (enc === 'gzip' ? q.get('x-gzip') : undefined) ?? q.get('*') ?? 0;
    if (weight > bestQ) {
      best = enc;
      bestQ = weight;
    }
  }
  return best;
}

export const DECODABLE = new Set(['gzip', 'x-gzip', 'deflate', 'br']);

/**
 * Header fields as the client will get them. `encoding` 'keep': the body is the upstream's (only
 * Vary may change); otherwise the body was re-encoded (null: identity) to `length` bytes (null:
 * unknown, sent chunked). A changed body's strong ETag becomes weak (RFC 9110 §8.8.1).
 */
export function rewriteFields(
  raw: readonly string[],
  encoding: 'br' | 'gzip' | null | 'keep',
  length: number | null,
  changed: boolean,
  vary: boolean,
): string[] {
  const out: string[] = [];
  let varyDone = !vary;
  const newBody = encoding !== 'keep';
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    const lower = name.toLowerCase();
    let value = raw[i + 1];
    if (newBody && (lower === 'content-length' || lower === 'content-encoding')) continue;
    if (lower === 'etag' && changed && value.startsWith('"')) value = `W/${value}`;
    if (lower === 'vary' && vary) {
      varyDone = true;
      if (!/(^|,)\s*(accept-encoding|\*)\s*(,|$)/i.test(value)) value = `${value}, Accept-Encoding`;
    }
    out.push(name, value);
  }
  if (newBody && length !== null) out.push('Content-Length', String(length));
  if (newBody && encoding !== null) out.push('Content-Encoding', encoding);
  if (!varyDone) out.push('Vary', 'Accept-Encoding');
  return out;
}

export function fieldsOf(raw: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i].toLowerCase();
    out[k] = out[k] === undefined ? raw[i + 1] : `${out[k]}, ${raw[i + 1]}`;
  }
  return out;
}
