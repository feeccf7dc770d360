// The nftables event listener against the real kernel, in a throwaway namespace: what it prints
// for each kind of change, and that a burst of element notifications arrives whole.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { after, describe, it } from 'node:test';
import { applyScript } from '../../src/backend/nftables/apply.js';
import { LISTENING, NF_EVENT_LISTENER } from '../../src/backend/nftables/event-listener.js';
import { useNetns } from '../support/netns.js';

const ns = useNetns(`kpts-listener-${process.pid}`);
const exec = { wrap: ns.wrap };

/** Starts the listener; `lines` collects what it prints; resolves once it is subscribed. */
async function listen(): Promise<{ child: ChildProcess; lines: string[]; generations: () => number }> {
  const child = spawn(ns.wrap[0]!, [...ns.wrap.slice(1), ...NF_EVENT_LISTENER], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: string[] = [];
  createInterface({ input: child.stdout! }).on('line', (l) => lines.push(l));
  const generations = (): number => lines.filter((l) => l.startsWith('# new generation')).length;
  for (let i = 0; lines.length === 0; i++) {
    assert.ok(i < 100, 'the listener says it listens within 5 s');
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(lines[0], LISTENING);
  // Subscribed when it says so: the first commit after shows.
  await applyScript('add table ip probe\ndelete table ip probe\n', exec);
  await untilGenerations({ generations }, 1);
  lines.length = 0;
  return { child, lines, generations };
}

/** Waits until `n` generation lines have been printed (at most 10 s). */
async function untilGenerations(l: { generations: () => number }, n: number): Promise<void> {
  for (let i = 0; l.generations() < n; i++) {
    assert.ok(i < 200, `${n} generations printed within 10 s (got ${l.generations()})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('nftables event listener', () => {
  const children: ChildProcess[] = [];
  after(() => children.forEach((c) => c.kill()));

  it('prints each change with its family, table and object, then the generation and who committed it', async () => {
    const l = await listen();
    children.push(l.child);
    await applyScript(
      'table ip kube-proxy {\n set service-ips { type ipv4_addr; elements = { 10.96.0.1 } }\n chain services {\n ip daddr @service-ips counter\n }\n}\n',
      exec,
    );
    await applyScript('delete element ip kube-proxy service-ips { 10.96.0.1 }\nflush chain ip kube-proxy services\n', exec);
    await applyScript('add table ip6 other\nadd chain ip6 other c\ndelete table ip6 other\n', exec);
    await untilGenerations(l, 3);
    const [first, second, third] = [0, 1, 2].map((g) => {
      const ends = l.lines.flatMap((x, i) => (x.startsWith('# new generation') ? [i] : []));
      return l.lines.slice(g === 0 ? 0 : ends[g - 1]! + 1, ends[g]! + 1);
    });
    assert.deepEqual(first!.slice(0, -1).sort(), [
      'add chain ip kube-proxy services',
      'add element ip kube-proxy service-ips',
      'add rule ip kube-proxy services',
      'add set ip kube-proxy service-ips',
      'add table ip kube-proxy',
    ]);
    assert.match(first!.at(-1)!, /^# new generation \d+ by process \d+ \(nft\)$/);
    assert.deepEqual(second!.slice(0, -1), ['delete element ip kube-proxy service-ips', 'delete rule ip kube-proxy services']);
    assert.deepEqual(third!.slice(0, -1), ['add table ip6 other', 'add chain ip6 other c', 'delete chain ip6 other c', 'delete table ip6 other']);
    const gens = [first, second, third].map((g) => Number(/generation (\d+)/.exec(g!.at(-1)!)![1]));
    assert.deepEqual(gens, [gens[0], gens[0]! + 1, gens[0]! + 2], 'one generation per transaction, in order');
  });

  it('a transaction of 50,000 elements arrives whole', async () => {
    const l = await listen();
    children.push(l.child);
    const elements = Array.from({ length: 50_000 }, (_, i) => `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`);
    await applyScript(`add table ip burst\nadd set ip burst s { type ipv4_addr; }\nadd element ip burst s { ${elements.join(', ')} }\n`, exec);
    await untilGenerations(l, 1);
    assert.equal(l.lines.filter((x) => x === 'add element ip burst s').length, 50_000);
    assert.equal(l.child.exitCode, null, 'still listening');
  });
});
