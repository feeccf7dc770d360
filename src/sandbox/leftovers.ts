// `kube-proxy-ts sandbox --cleanup`: what a sandbox killed without a chance to clean up (SIGKILL,
// a crash, a power cut) left: its network namespaces, the processes in them, its temp files.
// Each sandbox records its owner's PID; only sandboxes whose owner is gone are removed, so a
// sandbox still running (another terminal, another user's tests) is never touched.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listNamespaces } from './topology.js';
import { processAlive } from '../node/exec.js';
import { removeNetnsState } from '../node/netns-state.js';

/** Namespaces are `<prefix><4 hex>-<role>`; the temp copy of the manifests is `<TEMP_PREFIX><pid>-…`. */
export const TEMP_PREFIX = 'kube-proxy-sandbox-';
/** A sandbox's namespaces may exist for this long before its owner file does (it is written first). */
const UNCLAIMED_GRACE_MS = 60_000;

const ownerFile = (id: string, dir: string): string => join(dir, `${TEMP_PREFIX}${id}.owner`);

/** Records this process as the owner of sandbox `id` (removed with the sandbox). */
export function claimSandbox(id: string, dir = tmpdir()): () => void {
  const file = ownerFile(id, dir);
  writeFileSync(file, `${process.pid}\n`);
  return () => rmSync(file, { force: true });
}

function ownerAlive(id: string, dir: string, namespace: string): boolean {
  try {
    const pid = Number(readFileSync(ownerFile(id, dir), 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 && processAlive(pid);
  } catch {
    // No owner file: a sandbox being created right now, unless the namespace is old.
    try {
      return Date.now() - statSync(`/run/netns/${namespace}`).mtimeMs < UNCLAIMED_GRACE_MS;
    } catch {
      return false;
    }
  }
}

export interface SandboxLeftovers {
  namespaces: string[];
  processes: number;
  tempFiles: string[];
}

/** Removes the leftovers of dead sandboxes whose ids start with prefix; returns what went. */
export function removeSandboxLeftovers(prefix: string, dir = tmpdir()): SandboxLeftovers {
  const report: SandboxLeftovers = { namespaces: [], processes: 0, tempFiles: [] };
  const idOf = new RegExp(`^(${prefix}[0-9a-f]{4})-`);
  for (const ns of listNamespaces(prefix)) {
    const id = idOf.exec(ns)?.[1];
    if (id === undefined || ownerAlive(id, dir, ns)) continue;
    // The processes go first: a namespace with processes in it lives on after `ip netns del`.
    const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split('\n').filter((p) => /^\d+$/.test(p));
    for (const pid of pids) {
      try {
        process.kill(Number(pid), 'SIGKILL');
        report.processes++;
      } catch {
        // Already gone.
      }
    }
    removeNetnsState(ns);
    execFileSync('ip', ['netns', 'del', ns]);
    report.namespaces.push(ns);
  }
  for (const name of readdirSync(dir)) {
    if (!name.startsWith(TEMP_PREFIX)) continue;
    const rest = name.slice(TEMP_PREFIX.length);
    const owner = /^(\d+)-/.exec(rest)?.[1];
    const sandboxId = /^(.+)\.owner$/.exec(rest)?.[1];
    const stale =
      owner !== undefined ? !processAlive(Number(owner))
      : sandboxId !== undefined ? !ownerAlive(sandboxId, dir, '')
      : false;
    if (!stale) continue;
    rmSync(join(dir, name), { recursive: true, force: true });
    report.tempFiles.push(name);
  }
  return report;
}
