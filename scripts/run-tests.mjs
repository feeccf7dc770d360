// Runs the compiled test files with Node's own test runner, one process per file, and prints
// one line per file, then every failure in full (with the end of that file's output), then a
// summary. Output of passing files (proxy logs, expected errors) is not shown. Unit files run
// side by side, one per core; e2e files one at a time, since each builds network namespaces and
// loads the machine. A second lane runs beside them: the files that boot a kernel of their own
// (User-Mode Linux, e2e/uml*, which load one core) and e2e/faults, which mostly waits out the
// proxy's stall timeouts. Files the tests write go to a private temporary directory, removed at
// the end.
// Usage: node scripts/run-tests.mjs [unit|e2e|<path substring>...]
//   TEST_REPORTER=spec|tap|dot   every file's raw output through one of Node's reporters instead
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

function walk(dir) {
  let out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out = out.concat(walk(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

const filters = process.argv.slice(2);
let files = walk('dist/test').sort();
if (filters.length) files = files.filter((f) => filters.some((x) => f.includes(x)));
if (files.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}

const privateTmp = mkdtempSync(join(tmpdir(), 'kpt-tests-'));
// As /tmp itself: tests that run a command as an unprivileged user hand it files made here.
chmodSync(privateTmp, 0o1777);
const env = { ...process.env, TMPDIR: privateTmp };
// Set when this script itself runs under a test runner: each file must get a runner of its own.
delete env.NODE_TEST_CONTEXT;
const cleanup = () => rmSync(privateTmp, { recursive: true, force: true });
process.once('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.once(sig, () => process.exit(130));

const e2e = files.filter((f) => f.includes('/e2e/'));
// Unit files that time real stalls and backoffs: run alone after the others, like e2e files.
const timed = files.filter((f) => f.includes('/unit/reflector.'));
const unit = files.filter((f) => !e2e.includes(f) && !timed.includes(f));
const beside = e2e.filter((f) => f.includes('/e2e/uml') || f.includes('/e2e/faults.'));
const hostE2e = e2e.filter((f) => !beside.includes(f));

if (process.env.TEST_REPORTER) {
  const raw = (group, concurrency) =>
    group.length === 0 ? 0 : (spawnSync(process.execPath, ['--test', `--test-concurrency=${concurrency}`, `--test-reporter=${process.env.TEST_REPORTER}`, ...group], { stdio: 'inherit', env }).status ?? 1);
  const status = raw(unit, availableParallelism()) || raw([...timed, ...e2e], 1);
  process.exit(status);
}

const color = process.stdout.isTTY && !process.env.NO_COLOR;
const paint = (code) => (text) => (color ? `\x1b[${code}m${text}\x1b[0m` : text);
const [red, green, dim] = [paint(31), paint(32), paint(2)];
const reporter = fileURLToPath(new URL('./test-reporter.mjs', import.meta.url));
const width = Math.max(...files.map((f) => relative('dist/test', f).length));

/** Runs one file; resolves with the reporter's result (or a failure describing the crash). */
function runFile(file) {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, ['--test', `--test-reporter=${reporter}`, file], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (err += d));
    child.on('close', (code) => {
      let result;
      try {
        result = JSON.parse(out.trim().split('\n').pop());
      } catch {
        result = { pass: 0, fail: 1, skip: 0, todo: 0, failures: [{ name: '(the test process)', error: `exited ${code} without a report` }], output: (out + err).split('\n').slice(-200) };
      }
      if (code !== 0 && result.fail === 0) {
        result.fail = 1;
        result.failures.push({ name: '(the test process)', error: `exited with code ${code}\n${err.trim()}` });
      }
      resolve({ file: relative('dist/test', file), ms: Date.now() - started, ...result });
    });
  });
}

async function runAll(group, concurrency, results) {
  const queue = [...group];
  const worker = async () => {
    for (let file = queue.shift(); file !== undefined; file = queue.shift()) {
      const r = await runFile(file);
      results.push(r);
      const counts = `${r.pass} passed${r.fail ? `, ${r.fail} failed` : ''}${r.skip ? `, ${r.skip} skipped` : ''}${r.todo ? `, ${r.todo} todo` : ''}`;
      process.stdout.write(`${r.fail ? red('FAIL') : green('ok  ')}  ${r.file.padEnd(width)}  ${counts.padEnd(34)} ${dim(`${(r.ms / 1000).toFixed(1)} s`)}\n`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, group.length) }, worker));
}

const started = Date.now();
const results = [];
await runAll(unit, Math.max(1, availableParallelism()), results);
await runAll(timed, 1, results);
await Promise.all([runAll(hostE2e, 1, results), runAll(beside, 1, results)]);

const failed = results.filter((r) => r.fail > 0);
for (const r of failed) {
  process.stdout.write(`\n${red('━━ FAIL')} ${r.file}\n`);
  for (const f of r.failures) process.stdout.write(`\n${red('✗')} ${f.name}\n${f.error.replace(/^/gm, '    ')}\n`);
  const tail = r.output.join('\n').trim();
  if (tail) process.stdout.write(`\n  its output (the last ${r.output.length} lines):\n${tail.replace(/^/gm, '  │ ')}\n`);
}
const sum = (k) => results.reduce((n, r) => n + r[k], 0);
const summary = `${results.length} files, ${sum('pass') + sum('fail') + sum('skip') + sum('todo')} tests: ${sum('pass')} passed, ${sum('fail')} failed, ${sum('skip')} skipped, ${sum('todo')} todo (${((Date.now() - started) / 1000).toFixed(1)} s)`;
process.stdout.write(`\n${failed.length ? red(summary) : green(summary)}\n`);
process.exitCode = failed.length ? 1 : 0;
