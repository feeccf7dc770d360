// The long-lived helper shell every backend runs its tools through: input as a file or stdin,
// exit codes, requests answered in call order, a tool that never returns fails its request
// within its timeout (and the pool replaces the killed shell), a shell that dies fails the
// request in flight.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { run, toolEnv } from '../../src/node/exec.js';
import { CommandShell, shellFor } from '../../src/node/tool-process.js';

describe('tool environment', () => {
  test('kernel tools ask malloc for huge pages, whether started alone or by the helper shell', async () => {
    const show = ['sh', '-c', 'printf %s "$GLIBC_TUNABLES"'];
    const expected = toolEnv(process.env).GLIBC_TUNABLES;
    assert.match(expected ?? '', /(^|:)glibc\.malloc\.hugetlb=/);
    assert.equal((await run(show, undefined)).stdout, expected);
    const sh = new CommandShell([]);
    try {
      assert.equal((await sh.run(show, '')).stdout, expected);
    } finally {
      sh.kill();
    }
  });

  test("an operator's own tunables are kept, and their hugetlb setting wins", () => {
    assert.equal(toolEnv({}).GLIBC_TUNABLES, 'glibc.malloc.hugetlb=1');
    assert.equal(toolEnv({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' }).GLIBC_TUNABLES, 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1');
    assert.equal(toolEnv({ GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' }).GLIBC_TUNABLES, 'glibc.malloc.hugetlb=0');
    assert.equal(toolEnv({ PATH: '/bin' }).PATH, '/bin');
  });
});

describe('helper shell', () => {
  test('scripts run together: all at once, each with its own exit code and stderr, in the order given', async () => {
    const sh = new CommandShell([]);
    try {
      const t0 = performance.now();
      const results = await sh.runTogether(['sh'], ['sleep 0.4; echo one >&2', 'sleep 0.4; echo two >&2; exit 3', ['sleep 0.4; ', 'echo three >&2']]);
      const ms = performance.now() - t0;
      assert.deepEqual(results, [
        { code: 0, stderr: 'one\n' },
        { code: 3, stderr: 'two\n' },
        { code: 0, stderr: 'three\n' },
      ]);
      assert.ok(ms < 1000, `three 0.4 s scripts took ${Math.round(ms)} ms: not one after the other`);
      // The shell goes on answering requests after them.
      assert.equal((await sh.run(['cat'], 'next\n')).stdout, 'next\n');
    } finally {
      sh.kill();
    }
  });

  test('input reaches the tool as a file argument or as stdin; the exit code and both outputs come back', async () => {
    const sh = new CommandShell([]);
    try {
      assert.deepEqual(await sh.run(['cat'], 'as a file\n'), { code: 0, stdout: 'as a file\n', stderr: '' });
      assert.deepEqual(await sh.run(['cat'], 'on stdin\n', 'stdin'), { code: 0, stdout: 'on stdin\n', stderr: '' });
      const r = await sh.run(['sh', '-c', 'echo out; echo err >&2; exit 7', 'ignored'], '', 'stdin');
      assert.deepEqual(r, { code: 7, stdout: 'out\n', stderr: 'err\n' });
    } finally {
      sh.kill();
    }
  });

  test('runLines hands out every line of a large output, characters split between reads intact', async () => {
    const sh = new CommandShell([]);
    try {
      // ~3 MB: several of the reader's 1 MiB pieces; "é" is two bytes, so some fall across a piece.
      const script = 'i=0; while [ $i -lt 100000 ]; do echo "line $i é ééé -j KUBE-SEP"; i=$((i+1)); done; printf "last, no newline"';
      const lines: string[] = [];
      const r = await sh.runLines(['sh', '-c', script], (l) => lines.push(l));
      assert.equal(r.code, 0);
      assert.equal(lines.length, 100001);
      assert.equal(lines[99999], 'line 99999 é ééé -j KUBE-SEP');
      assert.ok(lines.slice(0, -1).every((l, i) => l === `line ${i} é ééé -j KUBE-SEP`));
      assert.equal(lines[100000], 'last, no newline');
      const failed = await sh.runLines(['sh', '-c', 'echo partial; echo why >&2; exit 3'], () => {});
      assert.deepEqual(failed, { code: 3, stderr: 'why\n' });
    } finally {
      sh.kill();
    }
  });

  test('requests run one at a time, in call order', async () => {
    const sh = new CommandShell([]);
    try {
      const order: string[] = [];
      const runs = [0.2, 0, 0.1].map((s, i) =>
        sh.run(['sh', '-c', `sleep ${s}; echo ${i}`], '', 'stdin').then((r) => order.push(r.stdout.trim())),
      );
      await Promise.all(runs);
      assert.deepEqual(order, ['0', '1', '2']);
    } finally {
      sh.kill();
    }
  });

  test('a tool that never returns fails within its timeout; the next request gets a new shell', async () => {
    const first = shellFor({});
    const t0 = Date.now();
    const r = await first.run(['sleep', '30'], '', 'stdin', 300);
    assert.equal(r.code, 124);
    assert.match(r.stderr, /sleep did not finish within 0.3 s/);
    assert.ok(Date.now() - t0 < 5000, 'the timeout ended the request');
    assert.equal(first.dead, true);
    const second = shellFor({});
    assert.notEqual(second, first);
    assert.equal((await second.run(['echo', 'again'], '', 'stdin')).stdout, 'again\n');
    second.kill();
  });

  test('a shell that dies fails the request in flight and every later one', async () => {
    const sh = new CommandShell([]);
    const inFlight = sh.run(['sleep', '30'], '', 'stdin');
    setTimeout(() => sh.kill(), 100);
    await assert.rejects(inFlight, /helper shell exited/);
    await assert.rejects(sh.run(['true'], ''), /helper shell exited/);
  });
});
