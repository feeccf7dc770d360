// What a proxy leaves on the host for its network namespace: its instance lock and the state
// that survives a restart (the nftables and iptables checkpoints), both named after the namespace's inode.
// Whoever deletes a namespace it ran a proxy in removes them too (the sandbox, tests, benchmarks):
// a later namespace can get the same inode.
import { readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';

const STATE_DIR = '/run/kube-proxy-ts';

/** The inode of this process's network namespace; 'unknown' without procfs (one for the whole host). */
export function ownNetnsId(): string {
  try {
    return String(statSync('/proc/self/ns/net').ino);
  } catch {
    return 'unknown';
  }
}

export const lockPathFor = (netnsId: string): string => `/run/kube-proxy-ts.netns-${netnsId}.lock`;

export const statePrefixFor = (netnsId: string): string => join(STATE_DIR, `netns-${netnsId}`);

/**
 * Removes the lock and restart state of the named namespace (`ip netns add` name); call it
 * before deleting the namespace. Missing files and namespaces are fine.
 */
export function removeNetnsState(name: string): void {
  let id: string;
  try {
    id = String(statSync(`/run/netns/${name}`).ino);
  } catch {
    return;
  }
  rmSync(lockPathFor(id), { force: true });
  let files: string[];
  try {
    files = readdirSync(STATE_DIR);
  } catch {
    return;
  }
  for (const f of files) if (f.startsWith(`netns-${id}.`)) rmSync(join(STATE_DIR, f), { force: true });
}
