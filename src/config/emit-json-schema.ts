/** `npm run build` step: writes config.schema.json at the repository root from the one schema. */
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { configJsonSchema } from './schema';

const out = resolve(__dirname, '../../../config.schema.json');
writeFileSync(out, `${JSON.stringify(configJsonSchema(), null, 2)}\n`);
