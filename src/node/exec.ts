// Running the kernel tools every backend needs (nft, iptables-restore, ipvsadm, ipset,
// conntrack): one-shot processes, and a pool of long-lived helper shells that fork a tool
// cheaply. Only backends' apply layers and node helpers use this; renderers never do.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

/** Temporary directories of helper shells are named `${prefix}${pid}-…`, so a later start can tell whose they were. */
export const EXEC_TEMP_PREFIX = 'kpt-exec-';

// With setpriv, a helper shell and every tool it starts get SIGKILL when their parent dies:
// a proxy killed outright leaves neither a shell nor a half-run tool behind.
export const DIE_WITH_PARENT = (process.env.PATH ?? '').split(delimiter).some((d) => d !== '' && existsSync(join(d, 'setpriv')))
  ? ['setpriv', '--pdeathsig', 'KILL', '--']
  : [];

export interface ExecOptions {
  /**
   * Command prefix, e.g. `['ip', 'netns', 'exec', 'ns1']` for tests and tools that run outside
   * the proxy's namespace. Empty in the proxy itself.
   */
  wrap?: string[];
  /** Longest one tool may run through the helper shell (default COMMAND_TIMEOUT_MS). */
  timeoutMs?: number;
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command (through `wrap`), optionally feeding stdin. Never throws for a non-zero exit. */
export async function run(argv: string[], input: string | undefined, opts: ExecOptions = {}): Promise<ExecResult> {
  const out: Buffer[] = [];
  const res = await stream(argv, input, (d) => out.push(d), opts);
  return { ...res, stdout: Buffer.concat(out).toString() };
}

/**
 * Like run, but hands stdout to `onStdout` chunk by chunk instead of keeping it: for outputs
 * too large to hold whole (a large table read back).
 */
export function stream(
  argv: string[],
  input: string | undefined,
  onStdout: (chunk: Buffer) => void,
  opts: ExecOptions = {},
): Promise<Omit<ExecResult, 'stdout'>> {
  const full = [...DIE_WITH_PARENT, ...(opts.wrap ?? []), ...argv];
  return new Promise((resolve, reject) => {
    const child = spawn(full[0]!, full.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    const err: Buffer[] = [];
    let failed: unknown;
    child.stdout.on('data', (d: Buffer) => {
      if (failed !== undefined) return;
      try {
        onStdout(d);
      } catch (e) {
        // A consumer that cannot take the output ends the read; the error is the result.
        failed = e;
        child.kill('SIGKILL');
      }
    });
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', reject);
    child.on('close', (code) => {
      if (failed !== undefined) {
        reject(failed instanceof Error ? failed : new Error(String(failed)));
        return;
      }
      const stderr = Buffer.concat(err).toString();
      // Through setpriv, a missing tool is an exit status; callers tell it apart as before.
      if (code === 127 && DIE_WITH_PARENT.length > 0 && stderr.startsWith('setpriv: failed to execute')) {
        reject(Object.assign(new Error(stderr.trim()), { code: 'ENOENT' }));
        return;
      }
      resolve({ code: code ?? 1, stderr });
    });
    // A child that exits early closes stdin; the exit status carries the error.
    child.stdin.on('error', () => undefined);
    child.stdin.end(input ?? '');
  });
}

/** Like run, but a tool that is not installed gives undefined instead of an error. */
export async function tryRun(argv: string[], input: string | undefined, opts: ExecOptions = {}): Promise<ExecResult | undefined> {
  try {
    return await run(argv, input, opts);
  } catch {
    return undefined;
  }
}

/** A helper process must not keep the proxy (or a test) alive while it has nothing to do. */
export function keepAlive(child: ChildProcessWithoutNullStreams, on: boolean): void {
  for (const h of [child, child.stdin, child.stdout, child.stderr] as unknown as Array<{ ref?: () => void; unref?: () => void }>) {
    if (on) h.ref?.();
    else h.unref?.();
  }
}

/** One long-lived helper per command prefix, replaced when it has died. */
export function helperFor<T extends { dead: boolean }>(pool: Map<string, T>, opts: ExecOptions, make: (wrap: string[]) => T): T {
  const k = JSON.stringify(opts.wrap ?? []);
  let h = pool.get(k);
  if (!h || h.dead) pool.set(k, (h = make(opts.wrap ?? [])));
  return h;
}

/** One argument quoted for sh. */
export const quote = (a: string): string => `'${a.replace(/'/g, `'\\''`)}'`;

/**
 * Runs tools through one long-lived shell: starting a process from a large Node heap costs
 * milliseconds per call, a small shell forks the tool much more cheaply. Input goes through a
 * private temporary file (as the last argument, or as stdin); the shell answers with the exit
 * status. Commands run one at a time, in call order.
 */
/** Longest a kernel tool may run (a full restore of a large ruleset takes seconds, not minutes). */
const COMMAND_TIMEOUT_MS = 180_000;

export class CommandShell {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly dir = mkdtempSync(join(tmpdir(), `${EXEC_TEMP_PREFIX}${process.pid}-`));
  private buf = '';
  private waiting: ((line: string) => void) | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private seq = 0;
  dead = false;

  constructor(wrap: string[]) {
    const argv = [...DIE_WITH_PARENT, ...wrap, 'sh'];
    this.child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (d: string) => {
      this.buf += d;
      const nl = this.buf.indexOf('\n');
      if (nl >= 0 && this.waiting) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        const w = this.waiting;
        this.waiting = undefined;
        w(line);
      }
    });
    this.child.stderr.resume();
    this.child.stdin.on('error', () => undefined);
    const die = (): void => {
      this.dead = true;
      this.waiting?.('rc=255');
      this.waiting = undefined;
    };
    this.child.on('error', die);
    this.child.on('exit', die);
    process.once('exit', () => {
      // The shell would exit on end of input anyway; killing it also stops a tool mid-run.
      this.child.kill('SIGKILL');
      rmSync(this.dir, { recursive: true, force: true });
    });
    keepAlive(this.child, false);
  }

  /** Runs `argv` with `input` as a file named by the last argument (`as: 'arg'`) or as stdin. */
  run(argv: string[], input: string, as: 'arg' | 'stdin' = 'arg', timeoutMs = COMMAND_TIMEOUT_MS): Promise<ExecResult> {
    const next = this.queue.then(() => this.runNow(argv, input, as, timeoutMs));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async runNow(argv: string[], input: string, as: 'arg' | 'stdin', timeoutMs: number): Promise<ExecResult> {
    if (this.dead) throw new Error('helper shell exited');
    const id = this.seq++;
    const inFile = join(this.dir, `in-${id}`);
    const outFile = join(this.dir, `out-${id}`);
    const errFile = join(this.dir, `err-${id}`);
    writeFileSync(inFile, input, { mode: 0o600 });
    const tool = [...DIE_WITH_PARENT, ...argv];
    const cmd = as === 'arg' ? [...tool, inFile].map(quote).join(' ') + ' </dev/null' : `${tool.map(quote).join(' ')} <${quote(inFile)}`;
    keepAlive(this.child, true);
    const line = await new Promise<string>((resolve) => {
      // A tool that never returns (a wedged kernel call) fails the command and replaces the shell.
      const timer = setTimeout(() => {
        this.dead = true;
        this.waiting = undefined;
        this.child.kill('SIGKILL');
        resolve(`rc=124 timeout`);
      }, timeoutMs);
      this.waiting = (l: string) => {
        clearTimeout(timer);
        keepAlive(this.child, false);
        resolve(l);
      };
      this.child.stdin.write(`${cmd} >${quote(outFile)} 2>${quote(errFile)}; echo "rc=$?"\n`);
    });
    const read = (f: string): string => {
      try {
        return readFileSync(f, 'utf8');
      } catch {
        return '';
      }
    };
    const stdout = read(outFile);
    const stderr = read(errFile);
    for (const f of [inFile, outFile, errFile]) rmSync(f, { force: true });
    if (line === 'rc=124 timeout') return { code: 124, stdout, stderr: `${argv[0]} did not finish within ${timeoutMs / 1000} s\n${stderr}` };
    const code = /^rc=(\d+)$/.exec(line.trim());
    return { code: code ? Number(code[1]) : 1, stdout, stderr };
  }
}

const shells = new Map<string, CommandShell>();

/** The helper shell for a command prefix. */
export function shellFor(opts: ExecOptions): CommandShell {
  return helperFor(shells, opts, (wrap) => new CommandShell(wrap));
}
