/**
 * Whether switchyard can write where the config says (the access log's folder, ACME's storage),
 * checked at load so that `switchyard check` and a reload refuse it up front.
 */
import { accessSync, constants, statSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Why `dir` cannot be written to, or null: it must be a writable directory, or its nearest
 * existing ancestor must be (the folders between are created).
 */
export function unwritableDirectory(dir: string): string | null {
  for (let d = dir; ; d = dirname(d)) {
    try {
      if (!statSync(d).isDirectory()) return `ENOTDIR: ${d} is not a directory`;
      accessSync(d, constants.W_OK | constants.X_OK);
      return null;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code !== 'ENOENT' || dirname(d) === d) return `${e.code ?? 'error'}: ${e.message}`;
    }
  }
}
