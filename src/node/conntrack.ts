// Deletes conntrack entries that would keep UDP/SCTP flows pinned to endpoints that are gone,
// or to "no endpoint" rejections that no longer apply. Thin wrapper over the `conntrack` tool.
import { run } from './exec.js';
import type { ChangeSet, IPFamily } from '../model/types.js';
import { log } from '../log.js';

export interface ConntrackOptions {
  /** Command prefix (tests run it in their own network namespace). */
  wrap?: string[];
}

/** Runs `conntrack` with args; never throws (a missing tool is exit code -1). */
export function runConntrack(args: string[], opts: ConntrackOptions): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(['conntrack', ...args], undefined, { wrap: opts.wrap }).catch((e: unknown) => ({ code: -1, stdout: '', stderr: String(e) }));
}

/** The conntrack argument lists that flush the stale flows of a change set. */
export function conntrackCommands(family: IPFamily, changes: Pick<ChangeSet, 'staleEndpoints' | 'staleServiceIPs'>): string[][] {
  const fam = family === 'IPv6' ? ['-f', 'ipv6'] : [];
  const cmds: string[][] = [];
  for (const s of changes.staleServiceIPs) {
    if (s.protocol === 'TCP') continue;
    cmds.push(['-D', ...fam, '-p', s.protocol.toLowerCase(), '--orig-dst', s.ip]);
  }
  for (const e of changes.staleEndpoints) {
    if (e.protocol === 'TCP') continue;
    cmds.push(['-D', ...fam, '-p', e.protocol.toLowerCase(), '--orig-dst', e.serviceIP, '--dst-nat', e.endpointIP]);
  }
  return cmds;
}

/** Runs the flushes; failures are logged, never thrown (a missed flush only delays recovery). */
export async function flushStale(
  family: IPFamily,
  changes: Pick<ChangeSet, 'staleEndpoints' | 'staleServiceIPs'>,
  opts: ConntrackOptions = {},
): Promise<number> {
  let done = 0;
  for (const args of conntrackCommands(family, changes)) {
    const res = await runConntrack(args, opts);
    // Exit status 1 with "0 flow entries" just means there was nothing to delete.
    if (res.code === 0 || /0 flow entries/.test(res.stderr)) {
      done++;
      continue;
    }
    log.warn('conntrack flush failed', { args: args.join(' '), error: res.stderr.trim() });
  }
  return done;
}
