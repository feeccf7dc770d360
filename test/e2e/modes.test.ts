// What each mode removes at start-up and on --cleanup, on a real kernel inside a throwaway
// network namespace.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { beforeEach, describe, it } from 'node:test';
import { cleanupAll, MODES } from '../../src/backend/index.js';
import { backendConfig, endpoint, servicePort, snapshot } from '../support/snapshots.js';
import { useNetns } from '../support/netns.js';
import { waitFor } from '../support/wait-for.js';
import { setLogWriter } from '../../src/log.js';

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
    await MODES.iptables.prepare({ dryRun: false, wrap });
    const tables = nftTables();
    assert.doesNotMatch(tables, /kube-proxy/);
    assert.match(tables, /table inet someone-else/);
    assert.match(natChains(), /-A KUBE-SERVICES .* -j KUBE-SVC-XPGD46QRK7WJZT7O/);
  });

  it('iptables mode begins its start-up before any backend exists, and both families share it', async () => {
    inNs('nft', ['add table ip kube-proxy']);
    const opts = { dryRun: false, wrap };
    const lines: string[] = [];
    const before = setLogWriter((line) => lines.push(line));
    try {
      void MODES.iptables.prepare(opts);
      // The nftables mode's table goes while the proxy would still be listing: no backend yet.
      await waitFor(() => !nftTables().includes('kube-proxy'), 'the start-up removes the nftables table');
      const v4 = MODES.iptables.createBackend(backendConfig(), opts);
      const v6 = MODES.iptables.createBackend(backendConfig({ family: 'IPv6' }), opts);
      await v4.sync(snapshot([web]));
      await v6.sync(snapshot([], { family: 'IPv6' }));
    } finally {
      setLogWriter(before);
    }
    assert.equal(lines.filter((l) => l.includes('using iptables flavour')).length, 1, lines.join(''));
    assert.match(natChains(), /-A KUBE-SERVICES -d 10\.96\.0\.10\/32 /);
  });

  it('nftables mode begins removing iptables leftovers before any backend exists', async () => {
    inNs('iptables-restore', [], LEFTOVER_CHAINS);
    void MODES.nftables.prepare({ dryRun: false, wrap });
    await waitFor(() => !natChains().includes('KUBE-'), 'the start-up removes the KUBE-* chains');
    assert.match(natChains(), /-A PREROUTING -j SOMEONE-ELSE/);
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
});
