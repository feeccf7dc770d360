// A full nftables write made without the monitor (too large to be watched) is trusted without
// reading the table back only when the kernel's generation numbers prove nobody else committed
// meanwhile: real `nft` and `nft monitor` in a throwaway namespace; a foreign element added
// during the write must still lead to a read-back.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { CommitCount } from '../../src/backend/common/foreign-watch.js';
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
