// `npm run bench:inproc`: runs every compiled bench/*.bench.js next to this file; each exports
// `async function run(): Promise<void>` and prints its own table.
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const only = process.argv.slice(2);
const files = readdirSync(here)
  .filter((f) => f.endsWith('.bench.js'))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .sort();
let failed = 0;
for (const f of files) {
  const mod = (await import(pathToFileURL(join(here, f)).href)) as { run?: () => Promise<void> };
  if (typeof mod.run !== 'function') {
    process.stderr.write(`${f}: no run() export, skipped\n`);
    continue;
  }
  try {
    await mod.run();
  } catch (e) {
    failed++;
    process.stderr.write(`${f}: ${e instanceof Error ? e.message : String(e)}\n`);
  }
  process.stdout.write('\n');
}
process.exit(failed > 0 ? 1 : 0);
