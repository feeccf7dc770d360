import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { acquireInstanceLock, removeStaleTempDirs } from '../../src/cli/instance.js';
import { inertSettings } from '../../src/cli/process-settings.js';
import { lockPathFor, removeNetnsState, statePrefixFor } from '../../src/node/netns-state.js';
import { defaultConfiguration } from '../../src/config/index.js';

/** A PID that certainly belongs to no process: one that just exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
  return Number(r.stdout.toString());
}

test('instance lock: taken, held against a live owner (named by PID), taken over from a dead one', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lock-test-'));
  const path = join(dir, 'proxy.lock');
  const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  try {
    const mine = acquireInstanceLock(path);
    assert.equal(mine.ok, true);
    assert.match(readFileSync(path, 'utf8'), new RegExp(`^${process.pid} \\d+\\n$`));
    if (mine.ok) mine.release();
    assert.equal(existsSync(path), false);

    writeFileSync(path, `${holder.pid}\n`);
    const refused = acquireInstanceLock(path);
    assert.deepEqual(refused, { ok: false, path, holderPid: holder.pid });

    writeFileSync(path, `${deadPid()} 12345\n`);
    const taken = acquireInstanceLock(path);
    assert.equal(taken.ok, true);
    if (taken.ok) taken.release();

    // A live PID with another start time is a reused PID, not the owner.
    writeFileSync(path, `${holder.pid} 1\n`);
    const reused = acquireInstanceLock(path);
    assert.equal(reused.ok, true);
    if (reused.ok) reused.release();
  } finally {
    holder.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('stale helper temp dirs are removed only when their owner is gone', () => {
  const dir = mkdtempSync(join(tmpdir(), 'stale-test-'));
  try {
    const dead = deadPid();
    mkdirSync(join(dir, `kpt-exec-${dead}-abc`));
    writeFileSync(join(dir, `kpt-exec-${dead}-abc`, 'in-0'), 'x');
    mkdirSync(join(dir, `kpt-nft-${dead}-def`));
    mkdirSync(join(dir, `kpt-exec-${process.pid}-live`));
    mkdirSync(join(dir, 'kpt-exec-notapid'));
    mkdirSync(join(dir, 'unrelated'));
    assert.deepEqual(removeStaleTempDirs(dir).sort(), [`kpt-exec-${dead}-abc`, `kpt-nft-${dead}-def`]);
    assert.ok(existsSync(join(dir, `kpt-exec-${process.pid}-live`)));
    assert.ok(existsSync(join(dir, 'kpt-exec-notapid')));
    assert.ok(existsSync(join(dir, 'unrelated')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('settings nothing acts on are listed when set away from their defaults', () => {
  const config = defaultConfiguration();
  assert.deepEqual(inertSettings(config), []);
  config.clientConnection.qps = 50;
  config.portRange = '30000-32767';
  assert.deepEqual(inertSettings(config), ['clientConnection.qps', 'portRange']);
  config.mode = 'userspace';
  assert.deepEqual(inertSettings(config), ['clientConnection.qps'], 'the userspace proxy uses portRange');
});

test("deleting a namespace's proxy state removes its lock and restart files, and no other namespace's", () => {
  const name = `kpt-state-${process.pid}`;
  const other = `kpt-state-other-${process.pid}`;
  for (const n of [name, other]) execFileSync('ip', ['netns', 'add', n]);
  try {
    const id = (n: string): string => String(statSync(`/run/netns/${n}`).ino);
    mkdirSync('/run/kube-proxy-ts', { recursive: true, mode: 0o700 });
    const mine = [lockPathFor(id(name)), `${statePrefixFor(id(name))}.nftables-ip.checkpoint`, `${statePrefixFor(id(name))}.nftables-ip6.checkpoint`];
    const theirs = [lockPathFor(id(other)), `${statePrefixFor(id(other))}.nftables-ip.checkpoint`];
    for (const f of [...mine, ...theirs]) writeFileSync(f, 'x');
    removeNetnsState(name);
    assert.deepEqual(mine.filter((f) => existsSync(f)), []);
    assert.deepEqual(theirs.filter((f) => !existsSync(f)), []);
    for (const f of theirs) rmSync(f, { force: true });
    removeNetnsState('kpt-no-such-namespace');
  } finally {
    for (const n of [name, other]) execFileSync('ip', ['netns', 'del', n]);
  }
});
