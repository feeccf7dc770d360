// What each mode removes at start-up and on --cleanup, and a mode without a kernel backend
// programming nothing, on a real kernel inside a throwaway network namespace.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, beforeEach, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { cleanupAll, MODES } from '../../src/backend/index.js';
import { backendConfig, endpoint, servicePort, snapshot } from '../support/snapshots.js';
import { useNetns } from '../support/netns.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const MAIN = join(ROOT, 'dist/src/cli/main.js');
const { name: ns, wrap } = useNetns(`kptmode-${process.pid}`);

function inNs(cmd: string, args: string[], input?: string): string {
  return execFileSync('ip', ['netns', 'exec', ns, cmd, ...args], { encoding: 'utf8', ...(input !== undefined ? { input } : {}) });
}

/** KUBE-* chains of an upstream proxy, a jump to them, and a chain of someone else. */
const LEFTOVER_CHAINS = `*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
:SOMEONE-ELSE - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A PREROUTING -j SOMEONE-ELSE
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j KUBE-SVC-XPGD46QRK7WJZT7O
COMMIT
`;

const nftTables = (): string => inNs('nft', ['list', 'tables']);
const natChains = (): string => inNs('iptables-save', ['-t', 'nat']);

const web = servicePort({ namespace: 'ns1', serviceName: 'web', clusterIP: '10.96.0.10', endpoints: [endpoint('10.244.2.5', 80)] });

describe('modes on a real kernel (network namespace)', () => {
  beforeEach(() => {
    // Each test starts empty: no nftables tables, no iptables chains.
    inNs('nft', ['flush', 'ruleset']);
  });

  it('nftables mode removes iptables leftovers before its first sync, and only ours', async () => {
    inNs('iptables-restore', [], LEFTOVER_CHAINS);
    const be = MODES.nftables.createBackend(backendConfig(), { dryRun: false, wrap });
    await be.sync(snapshot([web]));
    const chains = natChains();
    assert.doesNotMatch(chains, /KUBE-/);
    assert.match(chains, /-A PREROUTING -j SOMEONE-ELSE/);
    assert.match(nftTables(), /table ip kube-proxy/);
  });

  it("iptables mode's start-up removes the nftables mode's tables but keeps KUBE-* chains and other tables", async () => {
    inNs('nft', ['add table ip kube-proxy; add table ip6 kube-proxy; add table inet someone-else']);
    inNs('iptables-restore', [], LEFTOVER_CHAINS);
    await MODES.iptables.startupLeftovers({ wrap });
    const tables = nftTables();
    assert.doesNotMatch(tables, /kube-proxy/);
    assert.match(tables, /table inet someone-else/);
    assert.match(natChains(), /-A KUBE-SERVICES .* -j KUBE-SVC-XPGD46QRK7WJZT7O/);
  });

  it('--cleanup runs every mode\'s cleanup: nftables tables and KUBE-* chains go, others stay', async () => {
    inNs('nft', ['add table ip kube-proxy; add table ip6 kube-proxy; add table inet someone-else']);
    inNs('iptables-restore', [], LEFTOVER_CHAINS);
    await cleanupAll({ wrap });
    const tables = nftTables();
    assert.doesNotMatch(tables, /kube-proxy/);
    assert.match(tables, /table inet someone-else/);
    const chains = natChains();
    assert.doesNotMatch(chains, /KUBE-/);
    assert.match(chains, /-A PREROUTING -j SOMEONE-ELSE/);
  });

  describe('the proxy in a mode without a kernel backend', () => {
    let child: ReturnType<typeof spawn> | undefined;
    after(() => {
      if (child?.pid !== undefined && child.exitCode === null) child.kill('SIGKILL');
    });

    it('prints each snapshot, says nothing is programmed, and leaves the kernel untouched', async () => {
      inNs('nft', ['add table inet someone-else']);
      const args = ['--manifests', join(ROOT, 'examples'), '--hostname-override', 'node-1', '--proxy-mode', 'ipvs',
        '--healthz-bind-address=', '--metrics-bind-address='];
      child = spawn('ip', ['netns', 'exec', ns, process.execPath, MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      const proc = child;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no snapshot printed in 20 s; stderr:\n${stderr}`)), 20_000);
        proc.stdout!.on('data', (d: Buffer) => {
          stdout += d.toString();
          if (/^snapshot IPv4 generation \d+: \d+ service ports/m.test(stdout) && stdout.endsWith('\n')) {
            clearTimeout(timer);
            resolve();
          }
        });
        proc.on('exit', (code) => reject(new Error(`the proxy exited (${code}); stderr:\n${stderr}`)));
      });
      const exited = new Promise((r) => proc.on('exit', r));
      proc.kill('SIGTERM');
      await exited;

      assert.match(stdout, /^ {2}default\/\S+ TCP 10\.96\.\d+\.\d+:\d+/m);
      assert.match(stderr, /proxy mode ipvs has no kernel backend yet: nothing is programmed/);
      assert.match(stderr, /nothing programmed \(no kernel backend for this mode\)/);
      assert.equal(nftTables().trim(), 'table inet someone-else');
      assert.doesNotMatch(natChains(), /KUBE-/);
    });
  });
});
