// Namespaces and processes of the outside benchmark, and their removal: everything created here
// is registered and removed at exit, also on Ctrl-C or an error.
import { removeNetnsState } from '../../src/node/netns-state.js';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

const namespaces = new Set<string>();
const children = new Set<ChildProcess>();

export function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Adds a namespace with lo up; it is deleted by cleanup(). */
export function addNamespace(name: string): void {
  ip('netns', 'add', name);
  namespaces.add(name);
  ip('-n', name, 'link', 'set', 'lo', 'up');
}

export function deleteNamespace(name: string): void {
  if (!namespaces.delete(name)) return;
  removeNetnsState(name);
  try {
    ip('netns', 'del', name);
  } catch {
    // Already gone.
  }
}

/** Starts a program inside a namespace; `ip netns exec` execs it, so the child's PID is the program's. */
export function spawnIn(ns: string, argv: string[]): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** Ends a child this benchmark started (by its PID) and waits for it. */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

export async function cleanup(): Promise<void> {
  await Promise.all([...children].map((c) => stopChild(c)));
  for (const ns of [...namespaces]) deleteNamespace(ns);
}

/** Removes everything on Ctrl-C / SIGTERM, then exits. */
export function cleanupOnSignals(): void {
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      process.stderr.write(`\n${sig}: removing the benchmark's namespaces and processes\n`);
      void cleanup().finally(() => process.exit(130));
    });
  }
}

/** A kB field of /proc/PID/status (VmRSS, VmHWM) in MiB; NaN once the process is gone. */
export function memoryMiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/**
 * A process driven by JSON lines: each command carries an id, each answer echoes it. Lines
 * without a known id go to `onOther` (announcements such as `{"url":…}`).
 */
export class LineClient {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (a: Record<string, unknown>) => void; reject: (e: Error) => void }>();
  private readonly others: Array<Record<string, unknown>> = [];
  private readonly otherWaiters: Array<(a: Record<string, unknown>) => void> = [];
  private buffered = '';
  stderr = '';

  constructor(readonly child: ChildProcess) {
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => (this.stderr = (this.stderr + chunk).slice(-4000)));
    child.stdout!.on('data', (chunk: string) => {
      this.buffered += chunk;
      let nl: number;
      while ((nl = this.buffered.indexOf('\n')) >= 0) {
        const line = this.buffered.slice(0, nl);
        this.buffered = this.buffered.slice(nl + 1);
        this.onLine(JSON.parse(line) as Record<string, unknown>);
      }
    });
    child.once('exit', () => {
      for (const p of this.pending.values()) p.reject(new Error(`process exited; stderr: ${this.stderr}`));
      this.pending.clear();
    });
  }

  private onLine(answer: Record<string, unknown>): void {
    const p = typeof answer.id === 'number' && answer.started === undefined ? this.pending.get(answer.id) : undefined;
    if (!p) {
      const w = this.otherWaiters.shift();
      if (w) w(answer);
      else this.others.push(answer);
      return;
    }
    this.pending.delete(answer.id as number);
    if (answer.ok === true) p.resolve(answer);
    else p.reject(new Error(String(answer.error)));
  }

  /** The next line that is not an answer to a command. */
  nextOther(): Promise<Record<string, unknown>> {
    const o = this.others.shift();
    if (o) return Promise.resolve(o);
    return new Promise((resolve) => this.otherWaiters.push(resolve));
  }

  send(cmd: Record<string, unknown>): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.stdin!.write(JSON.stringify({ ...cmd, id }) + '\n');
    });
  }
}
