// One-shot commands touch only what they say: `--dry-run` binds no port and exits after printing;
// `--cleanup --dry-run` lists what it would remove and removes nothing; `--init-only` applies the
// node settings and exits. Each runs inside a namespace of its own.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { useNetns } from '../support/netns.js';
import { COMMAND } from '../support/command.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const EXAMPLES = join(ROOT, 'examples');

function inNs(ns: string, args: string[]): { code: number | null; stdout: string; stderr: string } {
  const res = spawnSync('ip', ['netns', 'exec', ns, process.execPath, COMMAND, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { code: res.status, stdout: res.stdout, stderr: res.stderr };
}

describe('--dry-run binds nothing', { timeout: 60_000 }, () => {
  const ns = useNetns('kpt-oneshot-ports');

  it('exits 0 after printing the ruleset even with the default ports taken and --bind-address-hard-fail', async () => {
    execFileSync('ip', ['-n', ns.name, 'link', 'set', 'lo', 'up']);
    // A running kube-proxy's ports, held by another process in the same namespace.
    const holder = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '-e', `
      const net = require('node:net');
      net.createServer().listen(10256, '0.0.0.0', () => net.createServer().listen(10249, '127.0.0.1', () => console.log('listening')));
    `], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise((resolve) => holder.stdout.once('data', resolve));
      const run = inNs(ns.name, ['--manifests', EXAMPLES, '--hostname-override', 'node-1', '--proxy-mode', 'nftables', '--dry-run', '--bind-address-hard-fail']);
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, /^table ip kube-proxy \{/m);
    } finally {
      holder.kill('SIGKILL');
    }
  });
});

describe('--cleanup --dry-run', { timeout: 60_000 }, () => {
  const ns = useNetns('kpt-oneshot-cleanup');

  it('lists the tables and chains --cleanup would remove, and leaves them in place', () => {
    execFileSync('ip', ['netns', 'exec', ns.name, 'nft', '-f', '-'], { input: 'add table ip kube-proxy\nadd chain ip kube-proxy services\n' });
    execFileSync('ip', ['netns', 'exec', ns.name, 'iptables-nft', '-t', 'nat', '-N', 'KUBE-SERVICES']);
    execFileSync('ip', ['netns', 'exec', ns.name, 'iptables-nft', '-t', 'nat', '-A', 'OUTPUT', '-j', 'KUBE-SERVICES']);
    const run = inNs(ns.name, ['--cleanup', '--dry-run']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^--cleanup would remove:$/m);
    assert.match(run.stdout, /^ {2}nftables table ip kube-proxy$/m);
    assert.match(run.stdout, /^ {2}iptables-nft chain nat KUBE-SERVICES$/m);
    assert.match(run.stdout, /^ {2}iptables-nft rule -t nat -D OUTPUT -j KUBE-SERVICES$/m);
    const tables = execFileSync('ip', ['netns', 'exec', ns.name, 'nft', 'list', 'tables'], { encoding: 'utf8' });
    assert.match(tables, /^table ip kube-proxy$/m, 'the nftables table is still there');
    const nat = execFileSync('ip', ['netns', 'exec', ns.name, 'iptables-nft-save', '-t', 'nat'], { encoding: 'utf8' });
    assert.match(nat, /^:KUBE-SERVICES /m, 'the chain is still there');
    assert.match(nat, /^-A OUTPUT -j KUBE-SERVICES$/m, 'and so is the jump to it');

    // The real cleanup, for contrast: then nothing is left to list.
    assert.equal(inNs(ns.name, ['--cleanup']).code, 0);
    const after = inNs(ns.name, ['--cleanup', '--dry-run']);
    assert.equal(after.stdout, 'nothing to remove\n');
  });
});

describe('--init-only', { timeout: 60_000 }, () => {
  const ns = useNetns('kpt-oneshot-init');

  it('applies the node settings in its namespace and exits 0 without starting the proxy', () => {
    const read = (): string =>
      execFileSync('ip', ['netns', 'exec', ns.name, 'sysctl', '-n', 'net.netfilter.nf_conntrack_tcp_timeout_close_wait'], { encoding: 'utf8' }).trim();
    const before = read();
    const wanted = before === '420' ? '480' : '420';
    const run = inNs(ns.name, ['--init-only', '--proxy-mode', 'nftables', '--conntrack-tcp-timeout-close-wait', `${wanted}s`, '--hostname-override', 'node-1', '--master', 'http://127.0.0.1:1']);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(read(), wanted);
    assert.match(run.stderr, /node set-up done \(--init-only\)/);
    assert.doesNotMatch(run.stderr, /starting kube-proxy-ts/);
  });
});

describe('--profiling', { timeout: 60_000 }, () => {
  const ns = useNetns('kpt-oneshot-pprof');

  /** GET inside the namespace: status, then the body. */
  function get(path: string): { status: number; body: string } {
    const script = `fetch('http://127.0.0.1:10249${path}').then(async (r) => process.stdout.write(r.status + '\\n' + (await r.text())))`;
    const out = execFileSync('ip', ['netns', 'exec', ns.name, process.execPath, '-e', script], { encoding: 'utf8', maxBuffer: 512 * 1024 * 1024 });
    const nl = out.indexOf('\n');
    return { status: Number(out.slice(0, nl)), body: out.slice(nl + 1) };
  }

  async function withProxy(extra: string[], fn: () => void): Promise<void> {
    execFileSync('ip', ['-n', ns.name, 'link', 'set', 'lo', 'up']);
    const args = [COMMAND, '--manifests', EXAMPLES, '--hostname-override', 'node-1', '--proxy-mode', 'nftables', '--dry-run', '--watch', '--metrics-bind-address', '127.0.0.1:10249', ...extra];
    const proxy = spawn('ip', ['netns', 'exec', ns.name, process.execPath, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    proxy.stderr.setEncoding('utf8').on('data', (d: string) => (log += d));
    try {
      for (let i = 0; i < 100 && !/ synced proxy rules /.test(log); i++) await new Promise((r) => setTimeout(r, 100));
      assert.match(log, / synced proxy rules /);
      fn();
    } finally {
      proxy.kill('SIGTERM');
      await new Promise((r) => proxy.once('close', r));
    }
  }

  it('serves a CPU profile and a heap snapshot that DevTools can open', async () => {
    await withProxy(['--profiling'], () => {
      assert.match(get('/debug/pprof/').body, /\/debug\/pprof\/profile\?seconds=N/);
      const cpu = get('/debug/pprof/profile?seconds=1');
      assert.equal(cpu.status, 200);
      const profile = JSON.parse(cpu.body) as { nodes: unknown[]; startTime: number; endTime: number; samples: number[] };
      assert.ok(profile.nodes.length > 0 && Array.isArray(profile.samples));
      assert.ok(profile.endTime - profile.startTime >= 900_000, 'about a second of profile, in microseconds');
      const heap = get('/debug/pprof/heap');
      assert.equal(heap.status, 200);
      const snapshot = JSON.parse(heap.body) as { snapshot: { meta: { node_fields: string[] }; node_count: number } };
      assert.ok(snapshot.snapshot.meta.node_fields.includes('name') && snapshot.snapshot.node_count > 1000);
      assert.equal(get('/debug/pprof/profile?seconds=forever').status, 400);
    });
  });

  it('is not served without --profiling', async () => {
    await withProxy([], () => assert.equal(get('/debug/pprof/profile?seconds=1').status, 404));
  });
});
