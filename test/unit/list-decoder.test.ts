import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ListDecodeError, ListDecoder } from '../../src/source/list-decoder.js';

// A small seeded generator, so a failure names a seed that reproduces it.
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Strings made of what trips a naive splitter: brackets, quotes, backslashes, escapes,
// multi-byte characters (2, 3 and 4 bytes) and control characters.
const NASTY = ['{', '}', '[', ']', '"', '\\', '\\"', ',', ':', 'é', '€', '𝄞', '\n', '\u0000', ' ', 'a', '\\u', '"]}'];

function nastyString(r: () => number): string {
  let s = '';
  const n = Math.floor(r() * 8);
  for (let i = 0; i < n; i++) s += NASTY[Math.floor(r() * NASTY.length)];
  return s;
}

function value(r: () => number, depth: number): unknown {
  const pick = Math.floor(r() * (depth > 3 ? 4 : 6));
  switch (pick) {
    case 0:
      return nastyString(r);
    case 1:
      return Math.floor(r() * 2000) - 1000 + (r() < 0.3 ? 0.5 : 0);
    case 2:
      return [true, false, null][Math.floor(r() * 3)];
    case 3:
      return r() < 0.5 ? {} : [];
    case 4:
      return Array.from({ length: Math.floor(r() * 4) }, () => value(r, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = Math.floor(r() * 4); i > 0; i--) o[nastyString(r)] = value(r, depth + 1);
      return o;
    }
  }
}

// Splits the body at random byte offsets (so inside multi-byte characters too) and decodes it.
function decode(body: Buffer, r: () => number): { items: unknown[]; fields: Record<string, unknown>; hasItems: boolean } {
  const items: unknown[] = [];
  const dec = new ListDecoder((it) => items.push(it));
  let at = 0;
  while (at < body.length) {
    const size = r() < 0.2 ? 1 : 1 + Math.floor(r() * 40);
    dec.write(body.subarray(at, at + size));
    at += size;
  }
  return { items, ...dec.end() };
}

function pretty(o: unknown, r: () => number): string {
  return JSON.stringify(o, null, r() < 0.5 ? undefined : Math.floor(r() * 3));
}

test('list decoder: random lists with nasty strings, randomly chunked, decode as JSON.parse does', () => {
  for (let seed = 1; seed <= 300; seed++) {
    const r = rng(seed);
    const items = Array.from({ length: Math.floor(r() * 6) }, () => value(r, 0));
    const list: Record<string, unknown> = { kind: 'ServiceList', apiVersion: 'v1' };
    if (r() < 0.5) list.metadata = { resourceVersion: String(seed), continue: nastyString(r) };
    list.items = items;
    if (r() < 0.5) list.trailer = value(r, 0);
    const body = Buffer.from(pretty(list, r));
    const got = decode(body, r);
    assert.deepEqual(got.items, items, `seed ${seed}`);
    const { items: _i, ...fields } = list;
    assert.deepEqual(got.fields, fields, `seed ${seed}`);
    assert.equal(got.hasItems, true);
  }
});

test('list decoder: items arrive one by one, before the body ends', () => {
  const seen: unknown[] = [];
  const dec = new ListDecoder((it) => seen.push(it));
  dec.write(Buffer.from('{"metadata":{"resourceVersion":"7"},"items":[{"a":"]}"},'));
  assert.deepEqual(seen, [{ a: ']}' }]);
  dec.write(Buffer.from('{"b":1}'));
  assert.equal(seen.length, 2);
  dec.write(Buffer.from(']}'));
  assert.deepEqual(dec.end().fields, { metadata: { resourceVersion: '7' } });
});

test('list decoder: empty and null items, an empty object', () => {
  assert.deepEqual(decode(Buffer.from('{"items":[],"metadata":{}}'), rng(1)), { items: [], fields: { metadata: {} }, hasItems: true });
  assert.deepEqual(decode(Buffer.from(' { "items" : null } '), rng(1)), { items: [], fields: { items: null }, hasItems: true });
  assert.deepEqual(decode(Buffer.from('{}'), rng(1)), { items: [], fields: {}, hasItems: false });
  assert.equal(decode(Buffer.from('{"items":{}}'), rng(1)).hasItems, false);
});

test('list decoder: truncated bodies are a clear error, never a crash or a silent success', () => {
  const body = Buffer.from(JSON.stringify({ metadata: { resourceVersion: '3' }, items: [{ a: 'x"]}' }, { b: ['é'] }, 5] }));
  for (let cut = 0; cut < body.length; cut++) {
    const dec = new ListDecoder(() => undefined);
    assert.throws(
      () => {
        dec.write(body.subarray(0, cut));
        dec.end();
      },
      (e: unknown) => e instanceof ListDecodeError && /empty|ended early|invalid JSON/.test(e.message),
      `cut at ${cut}`,
    );
  }
});

test('list decoder: malformed bodies are a clear error', () => {
  const bad = [
    '[]',
    'null',
    '<html>',
    '{"items":[1,]}',
    '{"items":[1 2]}',
    '{"items":[{"a":1}}]}',
    '{"a":1,}',
    '{"a" 1}',
    '{a:1}',
    '{"items":[]} x',
    '{"items":[]}}',
    '{"items":[tru]}',
    '{"metadata":{"a":}}',
  ];
  for (const text of bad) {
    for (const seed of [1, 2, 3]) {
      assert.throws(() => decode(Buffer.from(text), rng(seed)), ListDecodeError, text);
    }
  }
});

test('list decoder: an error from the consumer stops the decoding', () => {
  const dec = new ListDecoder(() => {
    throw new Error('consumer failed');
  });
  assert.throws(() => dec.write(Buffer.from('{"items":[{}]}')), /consumer failed/);
});
