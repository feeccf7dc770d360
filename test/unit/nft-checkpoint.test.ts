// The restart checkpoint: what a clean stop writes is what the next start reads, exactly.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { SAME_ELEMENTS, elementsDigest, takeCheckpoint, writeCheckpoint, type Checkpoint, type ElementsSummary } from '../../src/backend/nftables/checkpoint.js';
import { diffElements, ElementComparer, type NftOp } from '../../src/backend/nftables/diff.js';

const dir = mkdtempSync(join(tmpdir(), 'kpt-checkpoint-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function ruleset(elements: number): Checkpoint['ruleset'] {
  const big = new Map<string, string | undefined>();
  for (let i = 0; i < elements; i++) big.set(`10.96.${i >> 8}.${i & 255} . tcp . 80 . ${i % 10}`, `10.244.${i >> 8}.${i & 255} . 8080`);
  return {
    family: 'ip',
    table: 'kube-proxy',
    sets: [
      { name: 'cluster-ips', kind: 'set', decl: 'type ipv4_addr', elements: new Map([['10.96.0.1', undefined]]) },
      { name: 'service-tcp-endpoints', kind: 'map', decl: 'type ipv4_addr . inet_proto . inet_service . integer : ipv4_addr . inet_service', elements: big },
      { name: 'affinity-x', kind: 'set', decl: 'type ipv4_addr; flags dynamic,timeout; timeout 3h', dynamic: true, elements: new Map() },
      {
        name: 'odd',
        kind: 'map',
        decl: 'type ifname : verdict',
        // Texts that would read back as another kind of line if written plainly.
        elements: new Map<string, string | undefined>([
          ['"we\\"ird\\u2028"', 'goto "x"'],
          ['[a', 'b'],
          ['{"chain":{}}', undefined],
          ['tab\there', 'v'],
          ['k', 'tab\tin value'],
          ['empty value', ''],
          ['', 'empty key'],
        ]),
      },
    ],
    chains: [
      { name: 'services', rules: ['ip daddr . meta l4proto . th dport vmap @service-ips'] },
      { name: 'empty', rules: [] },
    ],
  };
}

test('a checkpoint written in pieces (1 MB: several chunks) reads back as the same ruleset', () => {
  const path = join(dir, 'a', 'checkpoint.json');
  const cp: Checkpoint = { token: 'abc123', ruleset: ruleset(20000) };
  writeCheckpoint(path, cp);
  assert.deepEqual(readdirSync(join(dir, 'a')), ['checkpoint.json'], 'no temporary file left');
  assert.deepEqual(takeCheckpoint(path), cp);
  assert.equal(existsSync(path), false, 'a checkpoint is read once');
});

test('a write that fails leaves neither the checkpoint nor a temporary file', () => {
  const path = join(dir, 'b', 'checkpoint.json');
  const cp = { token: 't', ruleset: ruleset(10) };
  // A set whose elements cannot be iterated fails half-way through the file.
  (cp.ruleset.sets[1] as { elements: unknown }).elements = {
    *[Symbol.iterator]() {
      yield ['k', 'v'];
      throw new Error('disk full');
    },
  };
  assert.throws(() => writeCheckpoint(path, cp), /disk full/);
  assert.deepEqual(readdirSync(join(dir, 'b')), []);
});

test('a character split between two read chunks reads back whole', () => {
  const path = join(dir, 'c', 'checkpoint.json');
  // Two-byte characters throughout: a first element of the right length puts a character across
  // the first 1 MiB chunk boundary.
  for (let pad = 0; pad < 16; pad++) {
    const names = new Map<string, string | undefined>([['x'.repeat(pad), undefined]]);
    for (let i = 0; i < 40000; i++) names.set(`"é${i}${'é'.repeat(10)}"`, undefined);
    const cp: Checkpoint = { token: 't', ruleset: { family: 'ip', table: 'kube-proxy', sets: [{ name: 'n', kind: 'set', decl: 'type ifname', elements: names }], chains: [] } };
    writeCheckpoint(path, cp);
    const byte = readFileSync(path)[1 << 20]!;
    if ((byte & 0xc0) !== 0x80) continue;
    assert.deepEqual(takeCheckpoint(path), cp);
    return;
  }
  assert.fail('no padding put a character across the chunk boundary');
});

test('a checkpoint of another format or with a broken line is refused, and consumed', () => {
  const path = join(dir, 'd', 'checkpoint.json');
  writeCheckpoint(path, { token: 't', ruleset: ruleset(10) });
  const lines = readFileSync(path, 'utf8').split('\n');
  writeFileSync(path, JSON.stringify({ format: 1, token: 't', ruleset: { sets: [], chains: [] } }));
  assert.deepEqual(takeCheckpoint(path), { error: 'unknown checkpoint format' });
  assert.equal(existsSync(path), false);
  writeFileSync(path, [...lines.slice(0, 3), '["10.96.0.1"', ...lines.slice(3)].join('\n'));
  assert.match((takeCheckpoint(path) as { error: string }).error, /^unreadable checkpoint: /);
  assert.equal(existsSync(path), false);
  assert.equal(takeCheckpoint(path), undefined, 'no file: no checkpoint');
});

test('a checkpoint of the previous format (every element a JSON array) is still read', () => {
  const path = join(dir, 'e', 'checkpoint.json');
  const cp: Checkpoint = { token: 't', ruleset: ruleset(50) };
  const lines = [JSON.stringify({ format: 2, token: 't', family: 'ip', table: 'kube-proxy' })];
  for (const set of cp.ruleset.sets) {
    lines.push(JSON.stringify({ set: { name: set.name, kind: set.kind, decl: set.decl, ...(set.dynamic ? { dynamic: true } : {}) } }));
    if (!set.dynamic) for (const [k, v] of set.elements) lines.push(JSON.stringify(v === undefined ? [k] : [k, v]));
  }
  for (const chain of cp.ruleset.chains) lines.push(JSON.stringify({ chain }));
  writeCheckpoint(path, cp);
  writeFileSync(path, lines.join('\n') + '\n');
  assert.deepEqual(takeCheckpoint(path), cp);
});

test('elements compared as they are read give the operations of a comparison of the whole sets', () => {
  const path = join(dir, 'f', 'checkpoint.json');
  const written = ruleset(3000);
  writeCheckpoint(path, { token: 't', ruleset: written });
  // Wanted: one element gone, one added, one with a new value, per set.
  const want = new Map(
    written.sets.map((s) => {
      const elements = new Map(s.elements);
      const [first, second] = [...elements.keys()];
      if (first !== undefined) elements.delete(first);
      if (second !== undefined) elements.set(second, 'changed');
      elements.set('added', undefined);
      return [s.name, { ...s, elements }];
    }),
  );
  const streamed: NftOp[] = [];
  let elementsLeft = 0;
  const cp = takeCheckpoint(path, (set) => new ElementComparer(want.get(set.name)!, streamed)) as Checkpoint;
  for (const s of cp.ruleset.sets) elementsLeft += s.elements.size;
  const whole: NftOp[] = [];
  for (const s of written.sets) diffElements(s.elements, want.get(s.name)!, whole);
  const byText = (ops: NftOp[]): string[] => ops.map((o) => JSON.stringify(o)).sort();
  assert.deepEqual(byText(streamed), byText(whole));
  // An add in each of the 4 sets (the dynamic one has no elements written); a delete in each of
  // the 3 with elements; a new value in the 2 with a second element.
  assert.equal(streamed.filter((o) => o.kind === 'add-element').length, 4);
  assert.equal(streamed.filter((o) => o.kind === 'delete-element').length, 3);
  assert.equal(streamed.filter((o) => o.kind === 'replace-element').length, 2);
  assert.equal(elementsLeft, 0, 'a consumer that takes the elements leaves none in the checkpoint read');
});

test('a set whose summary matches what the reader holds is skipped unread; the sets and chains after it read as written', () => {
  const path = join(dir, 'g', 'checkpoint.json');
  const written = ruleset(50000);
  writeCheckpoint(path, { token: 't', ruleset: written });
  const summaries = new Map<string, ElementsSummary | undefined>();
  const cp = takeCheckpoint(path, (set, summary) => {
    summaries.set(set.name, summary);
    if (set.name !== 'service-tcp-endpoints') return undefined;
    set.elements = new Map([['held', undefined]]);
    return SAME_ELEMENTS;
  }) as Checkpoint;
  const big = written.sets[1]!;
  assert.deepEqual(summaries.get(big.name), {
    count: big.elements.size,
    digest: elementsDigest(big.elements),
    bytes: [...big.elements].reduce((n, [k, v]) => n + Buffer.byteLength(`${k}\t${v}\n`), 0),
  });
  assert.equal(summaries.get('affinity-x'), undefined, 'a dynamic set has no elements written, and no summary');
  assert.deepEqual([...cp.ruleset.sets[1]!.elements.keys()], ['held'], 'the skipped set keeps what the reader gave it');
  assert.deepEqual(cp.ruleset.sets[3], written.sets[3], 'the set after it reads whole');
  assert.deepEqual(cp.ruleset.chains, written.chains);
});

test('the elements digest: the same in any order, another for any changed key, value or kind of element', () => {
  const m = (entries: Array<[string, string | undefined]>): Map<string, string | undefined> => new Map(entries);
  const base = elementsDigest(m([['a', '1'], ['b', '2'], ['c', undefined]]));
  assert.equal(elementsDigest(m([['c', undefined], ['b', '2'], ['a', '1']])), base);
  for (const other of [
    m([['a', '1'], ['b', '3'], ['c', undefined]]),
    m([['a', '1'], ['b', '2'], ['d', undefined]]),
    m([['a', '1'], ['b', '2'], ['c', '']]),
    m([['a', '1'], ['b', '2']]),
    m([['a', '12'], ['b', ''], ['c', undefined]]),
  ]) {
    assert.notEqual(elementsDigest(other), base, JSON.stringify([...other]));
  }
  // Checkpoints written by earlier builds carry digests: the function may not change.
  const written = m([['10.96.0.1 . tcp . 80 . 0', '10.100.0.1 . 8080'], ['10.100.0.1 . 10.100.0.1', undefined], ['', ''], ['x', undefined]]);
  assert.equal(elementsDigest(written), 'c386d42de632c7b1');
});
