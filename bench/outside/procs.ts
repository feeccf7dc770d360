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

/** Ends a child this benchmark started (by its PID) and waits for it; SIGKILL after `graceMs`. */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
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
