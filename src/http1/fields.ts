/**
 * Reading request fields as llhttp hands them over (rawHeaders: name, value, name, value…):
 * the few the proxy acts on, gathered in one pass, and lookups by lower-case name.
 */

/** What the proxy needs to know from a request's fields, gathered in one pass over rawHeaders. */
export interface HeaderFacts {
  hosts: number;
  host: string | null;
  transferEncoding: string | null;
  transferEncodingFields: number;
  /** As sent; llhttp has refused malformed and repeated ones. */
  contentLength: string | null;
  expect: string | null;
  requestId: string | null;
  upgrade: string | null;
  websocketKey: string | null;
}

export function scanHeaders(raw: readonly string[]): HeaderFacts {
  const f: HeaderFacts = {
    hosts: 0,
    host: null,
    transferEncoding: null,
    transferEncodingFields: 0,
    contentLength: null,
    expect: null,
    requestId: null,
    upgrade: null,
    websocketKey: null,
  };
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    // Lengths first: most fields are none of these, and a length compare is cheaper than lower-casing.
    switch (name.length) {
      case 4:
        if (name.toLowerCase() === 'host') {
          f.hosts++;
          f.host = raw[i + 1]!;
        }
        break;
      case 6:
        if (name.toLowerCase() === 'expect') f.expect = raw[i + 1]!;
        break;
      case 7:
        if (name.toLowerCase() === 'upgrade') f.upgrade = raw[i + 1]!;
        break;
      case 12:
        if (name.toLowerCase() === 'x-request-id') f.requestId = raw[i + 1]!;
        break;
      case 14:
        if (name.toLowerCase() === 'content-length') f.contentLength = raw[i + 1]!;
        break;
      case 17: {
        const lower = name.toLowerCase();
        if (lower === 'transfer-encoding') {
          f.transferEncodingFields++;
          f.transferEncoding = raw[i + 1]!;
        } else if (lower === 'sec-websocket-key') f.websocketKey = raw[i + 1]!;
        break;
      }
      default:
        break;
    }
  }
  return f;
}

/**
 * The protocols of an Upgrade field that `allowed` names (RFC 9110 §7.8: a list of
 * `name[/version]`, names compared case-insensitively), as sent; null when none is allowed.
 */
export function allowedUpgrade(value: string, allowed: readonly string[]): string | null {
  const kept: string[] = [];
  for (const item of value.split(',')) {
    const protocol = item.trim();
    const slash = protocol.indexOf('/');
    const name = (slash === -1 ? protocol : protocol.slice(0, slash)).toLowerCase();
    if (name !== '' && allowed.includes(name)) kept.push(protocol);
  }
  return kept.length === 0 ? null : kept.join(', ');
}

export function findHeader(raw: readonly string[], lower: string): string | null {
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i];
    if (n.length === lower.length && n.toLowerCase() === lower) return raw[i + 1];
  }
  return null;
}
