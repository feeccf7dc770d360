// `npm run bench [-- options]`: the proxy measured from outside. For each mode and workload, the
// proxy runs as its own process in a fresh network namespace, fed by the fake API server through a
// kubeconfig with `--iptables-min-sync-period 0s`, while a prober in the same namespace connects to
// service VIPs until they answer. Prints figures and writes bench/results/latest.json; never fails
// on a figure. Options:
//   --mode MODE[,MODE]         nftables, iptables, userspace (default: nftables,iptables; ipvs needs
//                              its own kernel: `npm run bench:ipvs`)
//   --workload NAME[,NAME]     100, 1k, 10k, 30k, 5k, 44k or mixed (default: all, see workload.ts)
//   --changes N                one-service changes timed per workload (default 40)
//   --connects N               connections for the first-packet latency (default 1000)
//   --restarts N               restarts over the existing rules; the median is reported (default 1)
//   --profile DIR              write the proxy's CPU profile of the change phase there
//   --stages                   run the proxy at --v 4 and split each change by stage (its log's timestamps)
//   --proxy-main PATH          the proxy's command file (default: this build's bundle, kube-proxy-ts.js)
//   --out FILE                 results file (default bench/results/latest.json)
// Environment: KPB_PROXY_LOG=1 copies the proxy's log and output (and when it exited) to stderr;
// KPB_PROXY_V sets the proxy's --v (default 0); KPB_NODE_ARGS adds node flags to the proxy, e.g. "--cpu-prof --cpu-prof-dir=/tmp/p".
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cleanup, cleanupOnSignals } from './procs.js';
import { markdownTable, type Result } from './report.js';
import { MODES, runWorkload, type Mode, type RunOptions } from './run.js';
import { WORKLOADS } from './workload.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..', '..');

function parseArgs(argv: string[]): { modes: Mode[]; workloads: typeof WORKLOADS; out: string; run: RunOptions } {
  const opts = {
    modes: ['nftables', 'iptables'] as Mode[],
    workloads: WORKLOADS,
    out: join(root, 'bench', 'results', 'latest.json'),
    run: {
      changes: 40,
      connects: 1000,
      restarts: 1,
      profileDir: undefined as string | undefined,
      stages: false,
      proxyMain: join(root, 'dist', 'src', 'cli', 'kube-proxy-ts.js'),
      apiMain: join(root, 'dist', 'test', 'support', 'fake-apiserver-main.js'),
      probeMain: join(here, 'probe-main.js'),
    },
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    if (flag === '--stages') {
      opts.run.stages = true;
      continue;
    }
    const value = argv[++i];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    switch (flag) {
      case '--mode':
        opts.modes = value.split(',').map((m) => {
          if (!(MODES as readonly string[]).includes(m)) throw new Error(`--mode: ${MODES.join(', ')}, not ${m}`);
          return m as Mode;
        });
        break;
      case '--workload': {
        const wanted = value.split(',');
        // `10k` is 10k×10, `mixed` the mix of service types.
        const matches = (w: (typeof WORKLOADS)[number], n: string): boolean =>
          w.name === n || (n === 'mixed' ? w.mixed : !w.mixed && w.name.startsWith(`${n}×`));
        opts.workloads = WORKLOADS.filter((w) => wanted.some((n) => matches(w, n)));
        if (opts.workloads.length === 0) throw new Error(`--workload: none of ${value}; known: ${WORKLOADS.map((w) => w.name).join(', ')}`);
        break;
      }
      case '--changes':
      case '--connects':
      case '--restarts': {
        const n = Number(value);
        if (!Number.isInteger(n) || n < 1) throw new Error(`${flag}: a positive integer, not ${value}`);
        opts.run[flag.slice(2) as 'changes' | 'connects' | 'restarts'] = n;
        break;
      }
      case '--profile':
        opts.run.profileDir = value;
        break;
      case '--proxy-main':
        opts.run.proxyMain = value;
        break;
      case '--out':
        opts.out = value;
        break;
      default:
        throw new Error(`unknown option ${flag}`);
    }
  }
  return opts;
}

async function main(): Promise<void> {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`bench: ${(e as Error).message}\n`);
    process.exit(2);
  }
  cleanupOnSignals();
  const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
  const results: Result[] = [];
  // Written after each workload, so an interrupted run keeps what it measured.
  const save = (): void => {
    mkdirSync(dirname(opts.out), { recursive: true });
    writeFileSync(opts.out, JSON.stringify({ date: new Date().toISOString(), machine, proxyMain: opts.run.proxyMain, results }, null, 2) + '\n');
  };
  // A workload that fails (a VIP never answers) is reported and the others still run.
  const failed: string[] = [];
  try {
    for (const mode of opts.modes) {
      for (const w of opts.workloads) {
        try {
          const r = await runWorkload(mode, w, opts.run);
          results.push(r);
          save();
          process.stderr.write('\n');
          process.stdout.write(JSON.stringify(r) + '\n');
        } catch (e) {
          process.stderr.write('\n');
          failed.push(`${mode} ${w.name}: ${(e as Error).message}`);
        }
      }
    }
  } finally {
    await cleanup();
  }
  process.stdout.write(`\n${machine}\n\n${markdownTable(results)}\n`);
  if (failed.length > 0) process.stdout.write(`\nNot measured:\n${failed.map((f) => `- ${f}`).join('\n')}\n`);
}

void main().catch(async (e: unknown) => {
  process.stderr.write(`\nbench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  await cleanup();
  process.exit(1);
});
