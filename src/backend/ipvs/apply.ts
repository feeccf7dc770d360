// Thin layer over the IPVS mode's tools: the kube-ipvs0 dummy link and its addresses (`ip`),
// `ipset restore`, `ipvsadm` (save, restore, connection counters, timeouts) and `sysctl`. The
// iptables part goes through the iptables kit. Tools run through the helper shell of the command
// prefix, so a test's namespace is the one changed; without a prefix, what procfs offers for the
// proxy's own namespace (connection counts, sysctls, whether a link exists) is read or written
// in-process instead, because a process start is what a change costs on a slow machine.
import { readFile } from 'node:fs/promises';
import type { ExecOptions, ExecResult } from '../../node/exec.js';
import { shellFor } from '../../node/tool-process.js';
import type { IPFamily } from '../../model/types.js';
import { applySysctls, type SysctlSetting } from '../../node/sysctl.js';
import { parseIpvsadmSave, type ParsedVirtualServer } from './ipvsadm.js';
import { parseProcIpVs } from './procfs.js';
import { DUMMY_DEVICE } from './types.js';

const call = (argv: string[], input: string, exec: ExecOptions): Promise<ExecResult> => shellFor(exec).run(argv, input, 'stdin', exec.timeoutMs);

async function check(argv: string[], input: string, exec: ExecOptions): Promise<string> {
  const res = await call(argv, input, exec);
  if (res.code !== 0) throw new Error(`${argv.join(' ')} failed: ${res.stderr.trim() || `exit ${res.code}`}`);
  return res.stdout;
}

/** The addresses of one family on kube-ipvs0, or undefined when the link does not exist. */
export async function dummyAddresses(family: IPFamily, exec: ExecOptions = {}): Promise<string[] | undefined> {
  const res = await call(['ip', '-o', family === 'IPv6' ? '-6' : '-4', 'addr', 'show', 'dev', DUMMY_DEVICE], '', exec);
  if (res.code !== 0) return undefined;
  return [...res.stdout.matchAll(/\sinet6? ([0-9a-fA-F:.]+)\//g)].map((m) => m[1]!);
}

/**
 * Creates kube-ipvs0 when missing (left down, as upstream: the kernel treats its addresses as
 * local either way) and makes its addresses of `family` exactly `want`, in one `ip -batch`.
 * `known`: the addresses the caller last left there, so they need not be read back.
 * Returns the number of addresses added or removed.
 */
export async function syncDummy(want: readonly string[], family: IPFamily, exec: ExecOptions = {}, known?: readonly string[]): Promise<number> {
  // A link that is not there has no addresses to read: /proc/net/dev (this namespace's links)
  // says so without a process, and the batch below creates it.
  const missing = known === undefined && (exec.wrap ?? []).length === 0 && (await linkMissing(DUMMY_DEVICE));
  const have = known ?? (missing ? undefined : await dummyAddresses(family, exec));
  const wanted = new Set(want);
  const present = new Set(have ?? []);
  const host = family === 'IPv6' ? '/128' : '/32';
  // nodad: a service address must be usable at once, not after duplicate address detection.
  const extra = family === 'IPv6' ? ' nodad' : '';
  const lines = [
    ...(have === undefined ? [`link add ${DUMMY_DEVICE} type dummy`] : []),
    ...want.filter((a) => !present.has(a)).map((a) => `addr add ${a}${host} dev ${DUMMY_DEVICE}${extra}`),
    ...(have ?? []).filter((a) => !wanted.has(a)).map((a) => `addr del ${a}${host} dev ${DUMMY_DEVICE}`),
  ];
  if (lines.length > 0) await check(['ip', '-batch', '-'], lines.join('\n') + '\n', exec);
  return lines.length - (have === undefined ? 1 : 0);
}

/** Adds and removes addresses of kube-ipvs0 (which exists) in one `ip -batch`; returns how many. */
export async function editDummy(add: readonly string[], del: readonly string[], family: IPFamily, exec: ExecOptions = {}): Promise<number> {
  const host = family === 'IPv6' ? '/128' : '/32';
  const extra = family === 'IPv6' ? ' nodad' : '';
  const lines = [...del.map((a) => `addr del ${a}${host} dev ${DUMMY_DEVICE}`), ...add.map((a) => `addr add ${a}${host} dev ${DUMMY_DEVICE}${extra}`)];
  if (lines.length > 0) await check(['ip', '-batch', '-'], lines.join('\n') + '\n', exec);
  return lines.length;
}

/** Whether this namespace has no link of that name; false when /proc/net/dev cannot be read. */
async function linkMissing(name: string): Promise<boolean> {
  try {
    return !(await readFile('/proc/net/dev', 'utf8')).split('\n').some((l) => l.trim().startsWith(`${name}:`));
  } catch {
    return false;
  }
}

/** One `ipset restore` of the given input (toIpsetRestore, toIpsetUpdate); nothing for ''. */
export async function restoreIpsets(input: string, exec: ExecOptions = {}): Promise<void> {
  if (input !== '') await check(['ipset', 'restore'], input, exec);
}

/** `ipset save` output of the named sets' entries, by set name (sets that do not exist are absent). */
export async function savedIpsetEntries(exec: ExecOptions = {}): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  const res = await call(['ipset', 'save'], '', exec);
  if (res.code !== 0) throw new Error(`ipset save failed: ${res.stderr.trim()}`);
  for (const line of res.stdout.split('\n')) {
    const w = line.trim().split(/\s+/);
    if (w[0] === 'create') out.set(w[1]!, []);
    else if (w[0] === 'add') out.get(w[1]!)?.push(w[2]!);
  }
  return out;
}

/** The kernel's virtual servers (`ipvsadm -Sn`). */
export async function readVirtualServers(exec: ExecOptions = {}): Promise<ParsedVirtualServer[]> {
  return parseIpvsadmSave(await check(['ipvsadm', '-Sn'], '', exec));
}

/** Runs ipvsadm commands (`-A -t …` lines) in one `ipvsadm --restore`. */
export async function restoreIpvs(commands: readonly string[], exec: ExecOptions = {}): Promise<void> {
  if (commands.length > 0) await check(['ipvsadm', '--restore'], commands.join('\n') + '\n', exec);
}

/**
 * Open connections (ActiveConn + InActConn) per real server from `ipvsadm -Ln`, keyed
 * `<service ref> <real server>` as the diff names them, e.g. `-t 10.96.0.10:80 10.244.1.5:8080`.
 */
export function parseConnectionCounts(text: string): Map<string, number> {
  const out = new Map<string, number>();
  const option: Record<string, string> = { TCP: '-t', UDP: '-u', SCTP: '--sctp-service' };
  let service: string | undefined;
  for (const line of text.split('\n')) {
    if (!/^\s/.test(line)) {
      // Any other heading (FWM, the header) ends the previous service's list.
      const vs = /^(TCP|UDP|SCTP)\s+(\S+)\s/.exec(line + ' ');
      service = vs ? `${option[vs[1]!]} ${vs[2]}` : undefined;
      continue;
    }
    const rs = /^\s+->\s+(\S+)\s+\S+\s+\d+\s+(\d+)\s+(\d+)/.exec(line);
    if (rs && service) out.set(`${service} ${rs[1]}`, Number(rs[2]) + Number(rs[3]));
  }
  return out;
}

/**
 * Open connections per real server. In the proxy's own namespace (no command prefix) from
 * /proc/net/ip_vs, without starting a process; through a prefix, the file would show the
 * caller's namespace, so `ipvsadm -Ln` runs there instead.
 */
export async function connectionCounts(exec: ExecOptions = {}): Promise<Map<string, number>> {
  if ((exec.wrap ?? []).length === 0) {
    try {
      return parseProcIpVs(await readFile('/proc/net/ip_vs', 'utf8'));
    } catch {
      // No procfs view (ip_vs not loaded yet, procfs not mounted): ask the tool.
    }
  }
  return parseConnectionCounts(await check(['ipvsadm', '-Ln'], '', exec));
}

/** Writes sysctls in the proxy's network namespace; failures are returned (and logged), not thrown. */
export async function writeSysctls(settings: readonly SysctlSetting[], exec: ExecOptions = {}): Promise<string[]> {
  if (settings.length === 0) return [];
  // In the proxy's own namespace /proc/sys/net is that namespace's: written without a process.
  if ((exec.wrap ?? []).length === 0) {
    return [...applySysctls([...settings])].filter(([, outcome]) => outcome === 'failed').map(([name]) => `${name}: could not be read or written`);
  }
  // Through a prefix, one process for all of them; only when one fails, one each, to say which.
  const all = await call(['sysctl', '-q', '-w', ...settings.map((s) => `${s.name}=${s.value}`)], '', exec);
  if (all.code === 0) return [];
  const failed: string[] = [];
  for (const s of settings) {
    const res = await call(['sysctl', '-q', '-w', `${s.name}=${s.value}`], '', exec);
    if (res.code !== 0) failed.push(`${s.name}: ${res.stderr.trim() || `exit ${res.code}`}`);
  }
  return failed;
}

/** `ipvsadm --set …` (connection timeouts). */
export async function setIpvsTimeouts(args: readonly string[], exec: ExecOptions = {}): Promise<void> {
  await check(['ipvsadm', ...args], '', exec);
}

