// One proxy per node: two instances programming the same kernel reject each other's
// transactions forever. The lock is a file holding the owner's PID and process start time
// (so a reused PID is not mistaken for the owner); a lock whose owner is gone is taken over.
// Also removes what a killed predecessor left in the temp directory.
import { closeSync, openSync, readdirSync, readFileSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EXEC_TEMP_PREFIX, processAlive } from '../node/exec.js';
import { log } from '../log.js';
import { lockPathFor, ownNetnsId, statePrefixFor } from '../node/netns-state.js';

/** Overrides the lock file path (tests, or nodes without /run). */
export const LOCK_FILE_ENV = 'KUBE_PROXY_TS_LOCK_FILE';

/** The default lock is one per network namespace: /run/kube-proxy-ts.netns-<inode>.lock. */
export function defaultLockPath(): string {
  return process.env[LOCK_FILE_ENV] || lockPathFor(ownNetnsId());
}

/**
 * Where backends keep what must survive a restart of the proxy (its container too: the
 * DaemonSet mounts this directory from the host), one prefix per network namespace.
 */
export function defaultStatePrefix(): string {
  return statePrefixFor(ownNetnsId());
}

/** Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat); null if it does not exist. */
function startTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may contain spaces.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

export type LockResult = { ok: true; path: string; release(): void } | { ok: false; path: string; holderPid: number };

/** Takes the instance lock, or says which live process holds it. */
export function acquireInstanceLock(path = defaultLockPath()): LockResult {
  const mine = `${process.pid} ${startTime(process.pid) ?? ''}\n`;
  for (let attempt = 0; attempt < 5; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, 'wx', 0o644);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`cannot create lock file ${path}: ${(err as Error).message}`);
      let text = '';
      try {
        text = readFileSync(path, 'utf8');
      } catch {
        continue; // removed meanwhile: try again
      }
      const [pidText, start] = text.trim().split(' ');
      const pid = Number(pidText);
      const owner = Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid) && (start === undefined || start === '' || startTime(pid) === null || startTime(pid) === start);
      if (owner) return { ok: false, path, holderPid: pid };
      log.info('taking over a stale instance lock', { file: path, previousOwner: pidText ?? '' });
      try {
        unlinkSync(path);
      } catch {
        // Another starter removed it first; the exclusive create decides.
      }
      continue;
    }
    writeSync(fd, mine);
    closeSync(fd);
    const release = (): void => {
      try {
        if (readFileSync(path, 'utf8') === mine) unlinkSync(path);
      } catch {
        // Already gone.
      }
    };
    process.once('exit', release);
    return { ok: true, path, release };
  }
  throw new Error(`cannot take lock file ${path}: it keeps changing`);
}

/** Removes helper-shell temp directories whose owning process is gone; returns their names. */
export function removeStaleTempDirs(dir = tmpdir()): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return removed;
  }
  const pattern = new RegExp(`^(?:${EXEC_TEMP_PREFIX}|kpt-nft-)(\\d+)-`);
  for (const name of names) {
    const m = pattern.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || processAlive(pid)) continue;
    rmSync(join(dir, name), { recursive: true, force: true });
    removed.push(name);
  }
  if (removed.length > 0) log.info('removed temporary files of a previous instance', { dir, removed: removed.length });
  return removed;
}
