/**
 * `npm run build` step: writes config.schema.json (for editors) and docs/configuration.md (the
 * reference), both from the one schema.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { configurationReference } from './reference';
import { configJsonSchema } from './schema';

const root = resolve(__dirname, '../../..');
writeFileSync(resolve(root, 'config.schema.json'), `${JSON.stringify(configJsonSchema(), null, 2)}\n`);
mkdirSync(resolve(root, 'docs'), { recursive: true });
writeFileSync(resolve(root, 'docs/configuration.md'), configurationReference());
