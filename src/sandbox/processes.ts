// The processes of a sandbox topology: commands run in its namespaces (output captured, waited
// for, stopped by PID, ended with their owner), and the exit and signal handlers that remove
// every live topology when this process ends.
import { execFileSync, type ChildProcess } from 'node:child_process';

const OUTPUT_CAP = 1 << 20;

export interface ExecOptions {
  input?: string;
  /** Kill the command (by PID) after this long; default 30 s. */
  timeoutMs?: number;
  /** Reject on a non-zero exit status (default true). */
  check?: boolean;
  env?: NodeJS.ProcessEnv;
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface Proc {
  readonly pid: number;
  readonly ns: string;
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Captured output so far (the last 1 MiB of each stream). */
  stdout(): string;
  stderr(): string;
  /** Resolves with the first output line (past or future) matching pattern; rejects on timeout or exit. */
  waitFor(pattern: RegExp | string, opts?: { timeoutMs?: number; stream?: 'stdout' | 'stderr' | 'both' }): Promise<string>;
  /** SIGTERM, then SIGKILL after graceMs (default 2 s); resolves once the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

/** What the exit and signal handlers need of a live topology. */
interface LiveTopology {
  destroySync(): void;
}

// One set of exit/signal handlers serves every live topology, so a crashing or interrupted
// test run still removes its namespaces.
const live = new Set<LiveTopology>();
/** Live topologies whose owner left signal handling to this module. */
const signalled = new Set<LiveTopology>();
const onExit = (): void => {
  for (const t of live) t.destroySync();
};
/** The signals that end a topology's owner: Ctrl-C, kill, and a closed terminal or dropped ssh. */
export const ENDING_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
/** Shell convention: 128 + the signal's number. */
export const signalExitCode = (sig: NodeJS.Signals): number => (sig === 'SIGINT' ? 130 : sig === 'SIGHUP' ? 129 : 143);
const onSignal = (sig: NodeJS.Signals): void => {
  onExit();
  process.exit(signalExitCode(sig));
};

export function track(t: LiveTopology, handleSignals: boolean): void {
  if (live.size === 0) process.on('exit', onExit);
  live.add(t);
  if (!handleSignals) return;
  if (signalled.size === 0) for (const sig of ENDING_SIGNALS) process.on(sig, onSignal);
  signalled.add(t);
}

export function untrack(t: LiveTopology): void {
  if (signalled.delete(t) && signalled.size === 0) for (const sig of ENDING_SIGNALS) process.off(sig, onSignal);
  if (live.delete(t) && live.size === 0) process.off('exit', onExit);
}

let pdeathsig: boolean | undefined;

/**
 * Prefixes a command with `setpriv --pdeathsig SIGTERM` where util-linux has it: the kernel then
 * signals the process when this one dies, even by SIGKILL, so no child outlives its topology's
 * owner. `ip netns exec` and the command keep the setting (exec preserves it).
 */
export function withParentDeathSignal(argv: string[]): [string, string[]] {
  if (pdeathsig === undefined) {
    try {
      pdeathsig = execFileSync('setpriv', ['--help'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).includes('--pdeathsig');
    } catch {
      pdeathsig = false;
    }
  }
  const full = pdeathsig ? ['setpriv', '--pdeathsig', 'SIGTERM', ...argv] : argv;
  return [full[0]!, full.slice(1)];
}

export function isAlive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (!isAlive(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

export function signal(child: ChildProcess, sig: NodeJS.Signals): void {
  if (child.pid === undefined || !isAlive(child)) return;
  try {
    process.kill(child.pid, sig);
  } catch {
    // Already gone between the check and the kill.
  }
}

export async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  signal(child, 'SIGTERM');
  if (await waitExit(child, graceMs)) return;
  signal(child, 'SIGKILL');
  await waitExit(child, 5000);
}

class Output {
  text = '';
  private partial = '';
  private waiters = new Set<(line: string) => boolean>();

  push(chunk: string): void {
    this.text += chunk;
    if (this.text.length > OUTPUT_CAP) this.text = this.text.slice(-OUTPUT_CAP);
    const lines = (this.partial + chunk).split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) this.emit(line);
  }

  flush(): void {
    if (this.partial !== '') this.emit(this.partial);
    this.partial = '';
  }

  private emit(line: string): void {
    for (const w of this.waiters) if (w(line)) this.waiters.delete(w);
  }

  /** Registers a line watcher after replaying the captured history; returns an unsubscribe function. */
  watch(fn: (line: string) => boolean): () => void {
    for (const line of this.text.split('\n')) if (fn(line)) return () => {};
    this.waiters.add(fn);
    return () => this.waiters.delete(fn);
  }
}

export function makeProc(ns: string, child: ChildProcess, describe: string): Proc {
  const out = new Output();
  const err = new Output();
  child.stdout?.setEncoding('utf8').on('data', (s: string) => out.push(s));
  child.stderr?.setEncoding('utf8').on('data', (s: string) => err.push(s));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('close', (code, sig) => {
      out.flush();
      err.flush();
      resolve({ code, signal: sig });
    });
  });
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  return {
    pid: child.pid ?? -1,
    ns,
    child,
    exited,
    stdout: () => out.text,
    stderr: () => err.text,
    waitFor(pattern, opts = {}) {
      const re = typeof pattern === 'string' ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : pattern;
      const streams = opts.stream === 'stdout' ? [out] : opts.stream === 'stderr' ? [err] : [out, err];
      return new Promise<string>((resolve, reject) => {
        let done = false;
        const unsubs: Array<() => void> = [];
        const finish = (fn: () => void): void => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          for (const u of unsubs) u();
          fn();
        };
        const timer = setTimeout(
          () => finish(() => reject(new Error(`${describe}: no output matching ${re} within ${opts.timeoutMs ?? 10000} ms; stderr: ${err.text.slice(-2000)}`))),
          opts.timeoutMs ?? 10000,
        );
        for (const s of streams) {
          unsubs.push(
            s.watch((line) => {
              if (!re.test(line)) return false;
              finish(() => resolve(line));
              return true;
            }),
          );
        }
        void exited.then((st) =>
          finish(() => reject(new Error(`${describe} exited (code ${st.code}, signal ${st.signal}) before printing ${re}; stderr: ${err.text.slice(-2000)}`))),
        );
        void spawnError.then((e) => finish(() => reject(e)));
      });
    },
    stop: (graceMs = 2000) => stopChild(child, graceMs),
  };
}

export function runCollect(child: ChildProcess, describe: string, opts: ExecOptions): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const timeoutMs = opts.timeoutMs ?? 30000;
    const timer = setTimeout(() => {
      timedOut = true;
      signal(child, 'SIGKILL');
    }, timeoutMs);
    child.stdout?.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${describe}: ${e.message}`));
    });
    child.once('close', (code, sig) => {
      clearTimeout(timer);
      if (timedOut) return reject(new Error(`${describe}: killed after ${timeoutMs} ms; stderr: ${stderr.trim()}`));
      const res = { code: code ?? 128, stdout, stderr };
      if (opts.check !== false && (code !== 0 || sig !== null)) {
        return reject(new Error(`${describe}: exit ${code ?? sig}: ${stderr.trim() || stdout.trim()}`));
      }
      resolve(res);
    });
    child.stdin?.on('error', () => {});
    child.stdin?.end(opts.input ?? '');
  });
}
