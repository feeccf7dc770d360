import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NftJsonSplitter, readBackParser } from '../../src/backend/nftables/readback.js';

// The shape `nft -j list table` prints: metainfo, table, sets and maps (with and without
// elements, concatenations, verdicts, a string holding brackets), chains and rules.
const doc = {
  nftables: [
    { metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } },
    { table: { family: 'ip', name: 'kube-proxy', handle: 1 } },
    { set: { family: 'ip', name: 'empty', table: 'kube-proxy', type: 'ipv4_addr', handle: 2 } },
    {
      map: {
        family: 'ip',
        name: 'service-ips',
        table: 'kube-proxy',
        type: ['ipv4_addr', 'inet_proto', 'inet_service'],
        handle: 3,
        map: 'verdict',
        comment: 'a "quoted" ] [ } { comment',
        elem: [
          [{ concat: ['10.0.0.1', 'tcp', 80] }, { goto: { target: 'service-A' } }],
          [{ concat: ['10.0.0.2', 'udp', 53] }, { goto: { target: 'service-B' } }],
        ],
      },
    },
    { set: { family: 'ip', name: 'cidrs', table: 'kube-proxy', type: 'ipv4_addr', handle: 4, flags: ['interval'], elem: [{ prefix: { addr: '10.1.0.0', len: 16 } }, '10.2.0.1'] } },
    { set: { family: 'ip', name: 'affinity-x', table: 'kube-proxy', type: 'ipv4_addr', handle: 5, flags: ['dynamic', 'timeout'], elem: [{ elem: { val: '10.3.0.1', timeout: 10800, expires: 10000 } }] } },
    { chain: { family: 'ip', table: 'kube-proxy', name: 'service-A', handle: 6 } },
    { chain: { family: 'ip', table: 'kube-proxy', name: 'empty-chain', handle: 7 } },
    { rule: { family: 'ip', table: 'kube-proxy', chain: 'service-A', handle: 8, expr: [{ jump: { target: 'x' } }] } },
    { rule: { family: 'ip', table: 'kube-proxy', chain: 'service-A', handle: 9, expr: [{ accept: null }] } },
  ],
};

function pieces(text: string, size: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < text.length; i += size) out.push(text.slice(i, i + size));
  return out;
}

test('the splitter cuts each object and each set element out, whatever the piece boundaries', () => {
  for (const text of [JSON.stringify(doc), JSON.stringify(doc, null, 2)]) {
    for (const size of [1, 2, 7, 64, text.length]) {
      const items: unknown[] = [];
      const elements: Array<{ set: string; e: unknown }> = [];
      let set = '';
      const s = new NftJsonSplitter({
        item: (i) => items.push(i),
        setStart: (h) => {
          set = ((h.set ?? h.map) as { name: string }).name;
        },
        element: (e) => elements.push({ set, e }),
      });
      for (const p of pieces(text, size)) s.push(p);
      s.end();
      const whole = doc.nftables.map((i) => {
        const o = (i as { set?: { elem?: unknown[] }; map?: { elem?: unknown[] } }).set ?? (i as { map?: { elem?: unknown[] } }).map;
        return o?.elem ? { ...i, [('set' in i ? 'set' : 'map')]: { ...o, elem: [] } } : i;
      });
      assert.deepEqual(items, whole, `piece size ${size}`);
      const expected = doc.nftables.flatMap((i) => {
        const o = (i as { set?: { name: string; elem?: unknown[] } }).set ?? (i as { map?: { name: string; elem?: unknown[] } }).map;
        return o?.elem ? o.elem.map((e) => ({ set: o.name, e })) : [];
      });
      assert.deepEqual(elements, expected, `piece size ${size}`);
    }
  }
});

test('the read-back parser gives sets, their elements, chains and rule counts; a consumer can drop elements', () => {
  const text = JSON.stringify(doc);
  const p = readBackParser('ip');
  for (const piece of pieces(text, 5)) p.push(piece);
  const rb = p.end();
  const sets = Object.fromEntries(rb.ruleset.sets.map((s) => [s.name, { kind: s.kind, dynamic: !!s.dynamic, elements: [...s.elements] }]));
  assert.deepEqual(sets, {
    empty: { kind: 'set', dynamic: false, elements: [] },
    'service-ips': {
      kind: 'map',
      dynamic: false,
      elements: [
        ['10.0.0.1 . tcp . 80', 'goto service-A'],
        ['10.0.0.2 . udp . 53', 'goto service-B'],
      ],
    },
    cidrs: { kind: 'set', dynamic: false, elements: [['10.1.0.0/16', undefined], ['10.2.0.1', undefined]] },
    'affinity-x': { kind: 'set', dynamic: true, elements: [['10.3.0.1', undefined]] },
  });
  assert.deepEqual(rb.ruleset.chains.map((c) => c.name), ['service-A', 'empty-chain']);
  assert.deepEqual([...rb.ruleCounts], [['service-A', 2], ['empty-chain', 0]]);

  // A consumer takes each set's elements as they are read; none is left in the set.
  const seen: string[] = [];
  const q = readBackParser('ip', (s) => {
    const name = s.name;
    let n = 0;
    return {
      element: (k, v) => void (n++, name === 'service-ips' && seen.push(`${k} : ${v}`)),
      end: () => void seen.push(`${name}:${n}`),
    };
  });
  q.push(text);
  assert.deepEqual(seen, ['empty:0', '10.0.0.1 . tcp . 80 : goto service-A', '10.0.0.2 . udp . 53 : goto service-B', 'service-ips:2', 'cidrs:2', 'affinity-x:1']);
  assert.ok(q.end().ruleset.sets.every((s) => s.elements.size === 0));
});

test('truncated or malformed output is an error, not a partial table', () => {
  const text = JSON.stringify(doc);
  const cut = readBackParser('ip');
  cut.push(text.slice(0, text.length - 40));
  assert.throws(() => cut.end(), /ended early/);
  const bad = readBackParser('ip');
  assert.throws(() => bad.push(text.replace('"udp"', 'udp')), SyntaxError);
  const odd = readBackParser('ip');
  assert.throws(() => {
    odd.push(text.replace('"10.0.0.2"', '10.0.0.2"'));
    odd.end();
  });
});
