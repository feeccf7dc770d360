// A full nftables write made without the monitor (too large to be watched) is trusted without
// reading the table back only when the kernel's generation numbers prove nobody else committed
// meanwhile: real `nft` and `nft monitor` in a throwaway namespace; a foreign element added
// during the write must still lead to a read-back.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { CommitCount, WriteBracket } from '../../src/backend/common/foreign-watch.js';
import { applyScript } from '../../src/backend/nftables/apply.js';
import { ForeignWatch, monitorFor } from '../../src/backend/nftables/monitor.js';
import { run } from '../../src/node/exec.js';
import { useNetns } from '../support/netns.js';

const ns = useNetns(`kpts-unwatched-${process.pid}`);
const exec = { wrap: ns.wrap };
const TABLE = 'add table ip kube-proxy\ndelete table ip kube-proxy\ntable ip kube-proxy {\n\tset service-ips { type ipv4_addr; }\n}\nadd element ip kube-proxy service-ips { 10.96.0.1, 10.96.0.2 }\n';

/** Our whole table in one transaction, then `meanwhile` (someone else's commit, if any). */
const fullWrite =
  (meanwhile?: () => Promise<void>) =>
  async (count: CommitCount): Promise<void> => {
    await applyScript(TABLE, exec);
    count.transactions = 1;
    await meanwhile?.();
  };

describe('an unwatched full write in a real namespace', () => {
  after(() => monitorFor(exec).stop());
  const watch = new ForeignWatch(exec, 'nftables ip', (e) => e.family === 'ip' && e.table === 'kube-proxy', 1000);
  /** The verification's decision, asked again while it is put off for the new monitor to load. */
  const decide = async (): Promise<{ reason: string | undefined }> => {
    let r = await watch.readBackReason(true);
    while (r.retry) {
      await r.retry;
      r = await watch.readBackReason(true);
    }
    return r;
  };

  it('at start, only our commits between the marker and the new monitor: not read back', async () => {
    // As a full sync does: the monitor is started, then the write waits briefly for it.
    watch.forget();
    await watch.unwatchedWrite(fullWrite(), true);
    assert.equal((await decide()).reason, undefined);
  });

  it('someone else adds an element while the monitor is away: read back', async () => {
    const foreign = async (): Promise<void> => {
      const r = await run(['nft', 'add', 'element', 'ip', 'kube-proxy', 'service-ips', '{ 10.96.0.99 }'], undefined, exec);
      assert.equal(r.code, 0, r.stderr);
    };
    await watch.unwatchedWrite(fullWrite(foreign), true);
    assert.equal((await decide()).reason, 'monitor restarted');
  });

  it('again alone: not read back, and a foreign change afterwards is seen by the new monitor', async () => {
    await watch.unwatchedWrite(fullWrite(), true);
    assert.equal((await decide()).reason, undefined);
    await run(['nft', 'delete', 'element', 'ip', 'kube-proxy', 'service-ips', '{ 10.96.0.1 }'], undefined, exec);
    assert.equal((await decide()).reason, 'foreign change');
  });
});

describe('a watched write in a real namespace', () => {
  after(() => monitorFor(exec).stop());
  const watch = new ForeignWatch(exec, 'nftables ip', (e) => e.family === 'ip' && e.table === 'kube-proxy', 1000);
  /** Commits one change as the nftables backend does: the markers ride in the write's transaction. */
  const change =
    (element: string) =>
    async (_count: CommitCount, bracket?: WriteBracket): Promise<void> => {
      assert.ok(bracket, 'a ready monitor brackets the write');
      await applyScript(`${bracket.begin}add element ip kube-proxy service-ips { ${element} }\n${bracket.end}`, exec);
      bracket.ended();
    };

  it('one change is one kernel transaction, not taken for a foreign change; a foreign one after it is', async () => {
    await applyScript(TABLE, exec);
    watch.start();
    await monitorFor(exec).ready;
    await watch.readBackReason(true);
    // A listener of our own counts the kernel's transactions.
    const counter = spawn(ns.wrap[0]!, [...ns.wrap.slice(1), 'nft', 'monitor'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let generations = 0;
    createInterface({ input: counter.stdout }).on('line', (l) => {
      if (l.startsWith('# new generation')) generations++;
    });
    try {
      await new Promise((r) => setTimeout(r, 300));
      await watch.write(change('10.96.0.7'));
      await watch.write(change('10.96.0.8'));
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(generations, 2, 'two writes, two transactions');
    } finally {
      counter.kill();
    }
    assert.equal((await watch.readBackReason(true)).reason, undefined, 'our own changes');
    await run(['nft', 'delete', 'element', 'ip', 'kube-proxy', 'service-ips', '{ 10.96.0.7 }'], undefined, exec);
    assert.equal((await watch.readBackReason(true)).reason, 'foreign change');
  });

  it('a write that fails after its first transaction still closes its bracket: a later foreign change is seen', async () => {
    await assert.rejects(
      watch.write(async (_count, bracket) => {
        await applyScript(`${bracket!.begin}add element ip kube-proxy service-ips { 10.96.0.9 }\n`, exec);
        throw new Error('second transaction refused');
      }),
      /refused/,
    );
    assert.equal((await watch.readBackReason(true)).reason, undefined);
    await run(['nft', 'delete', 'element', 'ip', 'kube-proxy', 'service-ips', '{ 10.96.0.9 }'], undefined, exec);
    assert.equal((await watch.readBackReason(true)).reason, 'foreign change');
  });
});
