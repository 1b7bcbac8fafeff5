/** Throwaway certificates for TLS tests, made with openssl (EC P-256: quick to make). */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestCert {
  cert: string;
  key: string;
}

/** A self-signed certificate for `names` (subject alternative names; the first is also the CN). */
export function makeCert(names: string[], dir = mkdtempSync(join(tmpdir(), 'swy-cert-')), file = names[0]): TestCert {
  const base = join(dir, file.replace(/[^A-Za-z0-9.-]/g, '_'));
  const cert = `${base}.pem`;
  const key = `${base}-key.pem`;
  const r = spawnSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '30',
      '-keyout',
      key,
      '-out',
      cert,
      '-subj',
      `/CN=${names[0]}`,
      '-addext',
      `subjectAltName=${names.map((n) => `DNS:${n}`).join(',')}`,
    ],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`openssl failed: ${r.stderr}`);
  chmodSync(key, 0o600);
  return { cert, key };
}
