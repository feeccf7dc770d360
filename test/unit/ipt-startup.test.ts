import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { KernelChains } from '../../src/backend/iptables/save.js';
import { startUpFlavour, type StartUp } from '../../src/backend/iptables/startup.js';

const SAVE: KernelChains = { whole: new Map([['nat/KUBE-SERVICES', []]]), digests: new Map(), builtin: new Set() };
const shared = (over: Partial<StartUp> = {}) => async (): Promise<StartUp> => ({ flavour: 'nft', saves: new Map([['IPv4', SAVE]]), savedAt: Date.now(), ...over });

test("a backend takes the start-up's flavour and its family's save while the save is recent", async () => {
  assert.deepEqual(await startUpFlavour('IPv4', undefined, {}, shared()), { flavour: 'nft', save: SAVE });
  assert.deepEqual(await startUpFlavour('IPv6', undefined, {}, shared()), { flavour: 'nft' }, 'no save of that family');
});

test('a save older than 10 s is not trusted: the first sync reads the kernel again', async () => {
  assert.deepEqual(await startUpFlavour('IPv4', undefined, {}, shared({ savedAt: Date.now() - 11_000 })), { flavour: 'nft' });
});

test("a configured flavour wins, and the start-up's save of the other flavour is not used", async () => {
  assert.deepEqual(await startUpFlavour('IPv4', 'legacy', {}, shared()), { flavour: 'legacy' });
  assert.deepEqual(await startUpFlavour('IPv4', 'nft', {}, shared()), { flavour: 'nft', save: SAVE });
});

test('a save is handed out once: the shared start-up does not keep it for the life of the proxy', async () => {
  const once = await shared()();
  const get = async (): Promise<StartUp> => once;
  assert.deepEqual(await startUpFlavour('IPv4', undefined, {}, get), { flavour: 'nft', save: SAVE });
  assert.deepEqual(await startUpFlavour('IPv4', undefined, {}, get), { flavour: 'nft' });
  assert.equal(once.saves.size, 0);
});
