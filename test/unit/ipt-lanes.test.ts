// How a full sync's restores share the lanes: side by side where allowed, alone where others
// depend on an input, and nothing new after a failure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RestoreLanes } from '../../src/backend/iptables/lanes.js';

/** Restores that end when the test says; records what ran when. */
function fakeTool() {
  const events: string[] = [];
  const running = new Map<string, { lane: number; end: (error?: Error) => void }>();
  const start = (input: string, lane: number): Promise<void> =>
    new Promise((resolve, reject) => {
      events.push(`start ${input}@${lane}`);
      running.set(input, { lane, end: (error) => (events.push(`end ${input}`), running.delete(input), error ? reject(error) : resolve()) });
    });
  const end = async (input: string, error?: Error): Promise<void> => {
    running.get(input)!.end(error);
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  };
  return { events, running, start, end };
}

const settle = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
};

test('inputs beside each other fill the free lanes; one alone waits for all and holds back the next', async () => {
  const t = fakeTool();
  const lanes = new RestoreLanes(2, t.start);
  await lanes.alone('fixed');
  const groups = (async () => {
    for (const g of ['g1', 'g2', 'g3']) await lanes.beside(g);
    await lanes.alone('dispatch');
    await lanes.drain();
  })();
  await settle();
  assert.deepEqual(t.events, ['start fixed@0'], 'the groups wait for the fixed chains');
  await t.end('fixed');
  assert.deepEqual([...t.running.keys()], ['g1', 'g2'], 'two lanes: two groups at once');
  await t.end('g2');
  assert.deepEqual([...t.running.keys()], ['g1', 'g3'], 'the next group takes the lane that freed, without waiting for g1');
  assert.equal(t.running.get('g3')!.lane, 1);
  await t.end('g3');
  assert.deepEqual([...t.running.keys()], ['g1'], 'the dispatch chains wait for every group');
  await t.end('g1');
  assert.deepEqual([...t.running.keys()], ['dispatch']);
  await t.end('dispatch');
  await groups;
});

test('after a failure nothing more starts; the failure is thrown once the others have ended', async () => {
  const t = fakeTool();
  const lanes = new RestoreLanes(2, t.start);
  let thrown: unknown;
  const run = (async () => {
    for (const g of ['g1', 'g2', 'g3', 'g4']) await lanes.beside(g);
    await lanes.drain();
  })().catch((e: unknown) => (thrown = e));
  await settle();
  await t.end('g1', new Error('g1 refused'));
  assert.deepEqual([...t.running.keys()], ['g2'], 'g3 did not start');
  assert.equal(thrown, undefined, 'not thrown while g2 runs');
  await t.end('g2');
  await run;
  assert.match(String(thrown), /g1 refused/);
  assert.ok(!t.events.some((e) => e.startsWith('start g3') || e.startsWith('start g4')), t.events.join(', '));
});
