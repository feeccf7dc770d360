import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff } from '../../src/source/backoff.js';

test('backoff: 800 ms, doubling, capped at 30 s, jitter adds at most half a step', () => {
  const low = new Backoff({ random: () => 0 });
  assert.deepEqual(Array.from({ length: 8 }, () => low.next()), [800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
  const high = new Backoff({ random: () => 0.999999 });
  const d = Array.from({ length: 7 }, () => high.next());
  assert.ok(Math.abs(d[0]! - 1200) < 1 && Math.abs(d[3]! - 9600) < 1, String(d));
  assert.equal(d[6], 30000);
});

test('backoff: a success starts over', () => {
  const b = new Backoff({ random: () => 0 });
  b.next();
  b.next();
  b.next();
  assert.equal(b.consecutiveFailures, 3);
  b.reset();
  assert.equal(b.consecutiveFailures, 0);
  assert.equal(b.next(), 800);
});

test('backoff: Retry-After is honoured up to the cap', () => {
  const b = new Backoff({ random: () => 0 });
  assert.equal(b.next(5000), 5000);
  assert.equal(b.next(600_000), 30_000);
  assert.equal(b.next(0), 0);
});

test('backoff: the retry spanning a 10 s outage comes within 10 s of the server answering', () => {
  // Worst case over many random schedules: failures from t=0 until the server answers at 10 s.
  for (let seed = 0; seed < 2000; seed++) {
    let x = seed + 1;
    const random = (): number => ((x = (x * 48271) % 2147483647) / 2147483647);
    const b = new Backoff({ random });
    let t = 0;
    while (t < 10_000) t += b.next();
    assert.ok(t - 10_000 <= 10_000, `seed ${seed}: next attempt ${t - 10_000} ms after recovery`);
  }
});

test('backoff: rejects nonsense settings', () => {
  assert.throws(() => new Backoff({ initialMs: 0 }));
  assert.throws(() => new Backoff({ initialMs: 10, maxMs: 5 }));
  assert.throws(() => new Backoff({ jitter: 2 }));
});
