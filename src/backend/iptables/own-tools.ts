// Which processes that committed to the kernel were ours: every iptables-restore the backend
// starts reports its PID here (it is also the PID xtables-monitor names, as the tool is exec'd
// in place by the helper shell, setpriv and `ip netns exec`). PIDs are handed out in order and
// wrap only after millions, so the last few hundred identify our commits.
const KEPT = 512;
const order: number[] = [];
const pids = new Set<number>();
const listeners = new Set<(pid: number) => void>();

/** Records a tool process of ours (it may already have committed). */
export function noteOwnTool(pid: number): void {
  if (!pids.has(pid)) {
    pids.add(pid);
    order.push(pid);
    if (order.length > KEPT) pids.delete(order.shift()!);
  }
  for (const l of listeners) l(pid);
}

export function isOwnTool(pid: number): boolean {
  return pids.has(pid);
}

/** Calls `listener` with every PID noted from now on; returns the function that stops it. */
export function onOwnTool(listener: (pid: number) => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** The shell words that make a tool print its PID on stdout, then become the tool (same PID). */
export const PRINT_PID = ['sh', '-c', 'echo "$$"; exec "$0" "$@"'];

/** The PID a tool run under PRINT_PID printed first, and the rest of its output. */
export function splitPid(stdout: string): { pid: number | undefined; rest: string } {
  const nl = stdout.indexOf('\n');
  const pid = nl > 0 ? Number(stdout.slice(0, nl)) : NaN;
  return Number.isInteger(pid) && pid > 0 ? { pid, rest: stdout.slice(nl + 1) } : { pid: undefined, rest: stdout };
}
