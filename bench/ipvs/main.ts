// `npm run bench:ipvs`: boots User-Mode Linux (test/support/uml) and runs guest.ts in it, then
// prints the figures and writes them to bench/results/ipvs.json.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { runInUml } from '../../test/support/uml/run.js';

const GUEST = fileURLToPath(new URL('./guest.js', import.meta.url));
const OUT = fileURLToPath(new URL('../../../bench/results/ipvs.json', import.meta.url));

const load = loadavg()[0]!;
// The guest's environment is the init script's: pass the size knobs on (KPT_BENCH_SERVICES, ...).
const env = Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[0].startsWith('KPT_BENCH_') && e[1] !== undefined));
const res = await runInUml({ command: `${JSON.stringify(process.execPath)} ${JSON.stringify(GUEST)}`, env, memMb: 2048, timeoutMs: 900_000 });
const line = res.output.trim().split('\n').pop() ?? '';
let figures: Record<string, unknown>;
try {
  figures = JSON.parse(line) as Record<string, unknown>;
} catch {
  process.stderr.write(`the IPVS benchmark failed (exit ${res.exitCode}):\n${res.output}\n`);
  process.exit(1);
}
const result = {
  ...figures,
  machine: { cpu: cpus()[0]?.model, cores: cpus().length, loadAverage1m: load, kernel: 'linux.uml (User-Mode Linux 6.1, one CPU)' },
  umlRunMs: res.ms,
  date: new Date().toISOString(),
};
process.stdout.write(JSON.stringify(result, null, 2) + '\n');
mkdirSync(fileURLToPath(new URL('.', `file://${OUT}`)), { recursive: true });
writeFileSync(OUT, JSON.stringify(result, null, 2) + '\n');
