// Running the kernel tools every backend needs (nft, iptables-restore, ipvsadm, ipset,
// conntrack) as one-shot processes; long-lived ones are in tool-process.ts. Only backends'
// apply layers and node helpers use this; renderers never do.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/** Temporary directories of helper shells are named `${prefix}${pid}-…`, so a later start can tell whose they were. */
export const EXEC_TEMP_PREFIX = 'kpt-exec-';

// With setpriv, a helper shell and every tool it starts get SIGKILL when their parent dies:
// a proxy killed outright leaves neither a shell nor a half-run tool behind.
export const DIE_WITH_PARENT = (process.env.PATH ?? '').split(delimiter).some((d) => d !== '' && existsSync(join(d, 'setpriv')))
  ? ['setpriv', '--pdeathsig', 'KILL', '--']
  : [];

/**
 * The environment of every kernel tool we start. glibc's malloc grows nft's and iptables-nft's
 * heaps 4 KiB page by page: loading a 10,000-service ruleset costs `nft -f` ~87,000 page faults,
 * a third of its run (2.3 → 1.5–1.9 s with huge pages; iptables-nft-restore of the same
 * cluster ~8% faster). `glibc.malloc.hugetlb=1` has malloc ask for transparent huge pages,
 * which a kernel with THP set to `madvise` or `always` grants. An operator's own setting of
 * that tunable (e.g. `GLIBC_TUNABLES=glibc.malloc.hugetlb=0`) wins.
 */
export const TOOL_ENV = toolEnv(process.env);

export function toolEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const tunables = env.GLIBC_TUNABLES ?? '';
  if (/(^|:)glibc\.malloc\.hugetlb=/.test(tunables)) return env;
  return { ...env, GLIBC_TUNABLES: tunables === '' ? 'glibc.malloc.hugetlb=1' : `${tunables}:glibc.malloc.hugetlb=1` };
}

/**
 * Starts a kernel tool: through `wrap`, killed with the proxy (where setpriv exists), in the
 * tools' environment, all three pipes open.
 */
export function spawnTool(argv: string[], wrap: string[] = []): ChildProcessWithoutNullStreams {
  const full = [...DIE_WITH_PARENT, ...wrap, ...argv];
  return spawn(full[0]!, full.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: TOOL_ENV });
}

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
  return new Promise((resolve, reject) => {
    const child = spawnTool(argv, opts.wrap);
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

/** One long-lived helper per command prefix (and lane: helpers that work side by side), replaced when it has died. */
export function helperFor<T extends { dead: boolean }>(pool: Map<string, T>, opts: ExecOptions, make: (wrap: string[]) => T, lane = 0): T {
  const k = JSON.stringify(opts.wrap ?? []) + (lane > 0 ? `#${lane}` : '');
  let h = pool.get(k);
  if (!h || h.dead) pool.set(k, (h = make(opts.wrap ?? [])));
  return h;
}

/** One argument quoted for sh. */
export const quote = (a: string): string => `'${a.replace(/'/g, `'\\''`)}'`;

/** Whether a process with this PID exists (one we may not signal exists too). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
