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

test('over a large heap, a collection waits for growth by a quarter of what the last one left', () => {
  // ~200 MiB alive: a quarter of it (~50 MiB) is more than the 24 MiB asked for.
  const large = Array.from({ length: 200 }, (_, i) => new Array<number>(2 ** 17).fill(i));
  collectGarbage();
  const more = Array.from({ length: 36 }, (_, i) => new Array<number>(2 ** 17).fill(i));
  assert.equal(collectGarbageIfGrown(24), false, 'grew by 36 MiB, less than a quarter of 200');
  more.push(...Array.from({ length: 30 }, (_, i) => new Array<number>(2 ** 17).fill(i)));
  assert.equal(collectGarbageIfGrown(24), true, 'grew by 66 MiB');
  assert.equal(large.length + more.length, 266);
});
