// Sandbox client, run inside a namespace:
//   node dist/src/sandbox/probe-main.js tcp 10.96.0.10 80 [count]   prints which pods answered
//   node dist/src/sandbox/probe-main.js --json                      jobs (JSON array) on stdin, results on stdout
// Jobs run one after another so that one job's traffic never overlaps another's.
// Exits 2 on bad arguments or input.
import { formatAnswers } from './report.js';
import { probe, validateJob, type ProbeJob, type ProbeResult } from './probe.js';

const USAGE = 'usage: probe-main.js (tcp|udp) IP PORT [COUNT] | probe-main.js --json < jobs.json';

function fail(msg: string): never {
  process.stderr.write(`probe: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

async function readStdin(): Promise<string> {
  let text = '';
  process.stdin.setEncoding('utf8');
  for await (const chunk of process.stdin) text += chunk;
  return text;
}

async function runJson(): Promise<void> {
  let jobs: unknown;
  try {
    jobs = JSON.parse(await readStdin());
  } catch (err) {
    fail(`input is not JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(jobs)) fail('input must be a JSON array of jobs');
  jobs.forEach((j, i) => {
    const problem = validateJob(j);
    if (problem) fail(`job ${i}: ${problem}`);
  });
  const results: ProbeResult[] = [];
  for (const j of jobs as ProbeJob[]) results.push(await probe(j));
  process.stdout.write(JSON.stringify(results) + '\n');
}

async function runOne(args: string[]): Promise<void> {
  if (args.length < 3 || args.length > 4) fail('expected 3 or 4 arguments');
  const [proto, ip, port, count] = args;
  const job = { proto, ip, port: Number(port), count: count === undefined ? 10 : Number(count), concurrency: 1, timeoutMs: 1500 };
  const problem = validateJob(job);
  if (problem) fail(problem);
  const r = await probe(job as ProbeJob);
  process.stdout.write(`${ip}:${port}/${proto}: ${formatAnswers(r)}\n`);
}

const argv = process.argv.slice(2);
void (argv.length === 1 && argv[0] === '--json' ? runJson() : runOne(argv));
