import { test } from 'node:test';
import assert from 'node:assert/strict';
import { collectGarbage, collectGarbageIfGrown } from '../../src/node/memory.js';

test('a collection runs once the heap has grown by the given amount since the last one, not before', () => {
  collectGarbage();
  assert.equal(collectGarbageIfGrown(64), false, 'nothing grew yet');
  // 40 MiB that stay alive: the heap in use grows by that much whatever V8 does meanwhile.
  const held = Array.from({ length: 40 }, (_, i) => new Array<number>(2 ** 17).fill(i));
  assert.equal(collectGarbageIfGrown(64), false, 'grew by less than 64 MiB');
  assert.equal(collectGarbageIfGrown(24), true, 'grew by more than 24 MiB');
  assert.equal(collectGarbageIfGrown(24), false, 'measured again from the collection just run');
  assert.equal(held.length, 40);
});
