// `explain --compare-modes`: the renderers of different modes cross-checked against each other.
// Every service target, from each kind of client, must meet the same verdict, endpoints and
// masquerading in each mode, on the example cluster and on randomized ones.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { modeDescriptor, type ProxyMode } from '../../src/backend/modes.js';
import { compareModes, formatDifference, targetsFor, type Difference } from '../../src/explain/compare.js';
import type { Snapshot } from '../../src/model/types.js';
import { backendConfig, randomPorts, rng, snapshot } from '../support/snapshots.js';

const MAIN = new URL('../../src/cli/main.js', import.meta.url).pathname;
const EXAMPLES = new URL('../../../examples', import.meta.url).pathname;
const run = promisify(execFile);
const NODE_IP = backendConfig().nodeIPs[0]!;

async function compare(modes: string, ...extra: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [MAIN, 'explain', '--compare-modes', modes, '--manifests', EXAMPLES,
      '--hostname-override', 'node-1', '--cluster-cidr', '10.244.0.0/16', ...extra]);
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

test('examples: iptables and nftables agree on every service target from every client', async () => {
  const r = await compare('iptables,nftables');
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /^no differences between iptables and nftables: \d+ IPv4 service targets/);
});

// IPVS serves an externalTrafficPolicy Local service's external addresses (LB IPs, external IPs,
// NodePorts) from its local endpoints only, for every client; the iptables and nftables modes
// send clients on the node or in the pod network to any endpoint (the node's own connections
// masqueraded). A real difference of the modes (upstream's too) that the command reports.
function localPolicyInside(d: Difference, snap: Snapshot): boolean {
  const s = [...snap.services.values()].find((p) => p.info.name === d.service)!;
  return s.info.externalPolicyLocal && !d.client.startsWith('external ') && !d.target.endsWith(` ${s.info.clusterIP}:${s.info.port}`);
}

test('examples: ipvs and nftables agree except on the Local-policy service reached from inside the cluster', async () => {
  const r = await compare('ipvs,nftables');
  assert.equal(r.code, 1, r.stdout + r.stderr);
  const heads = r.stdout.split('\n').filter((l) => / from /.test(l) && l.endsWith(':'));
  assert.equal(heads.length, 6, r.stdout);
  for (const h of heads) assert.match(h, /^default\/web-local:http TCP (192\.0\.2\.11:80|10\.0\.0\.1:30082) from (local pod|other-node pod|node) /);
  assert.match(r.stdout, /ipvs: ACCEPT -> 10\.244\.1\.10:8080, 10\.244\.1\.11:8080\n/);
});

test('--json lists the families compared and the differences', async () => {
  const r = await compare('iptables,nftables', '--json');
  assert.equal(r.code, 0);
  const j = JSON.parse(r.stdout) as { modes: string[]; families: Array<{ family: string; compared: number; differences: unknown[] }> };
  assert.deepEqual(j.modes, ['iptables', 'nftables']);
  assert.equal(j.families[0]!.family, 'IPv4');
  assert.ok(j.families[0]!.compared > 40);
  assert.deepEqual(j.families[0]!.differences, []);
});

test('bad --compare-modes arguments are usage errors', async () => {
  assert.equal((await compare('nftables')).code, 2);
  const r = await compare('nftables,userspace');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /'userspace' is not one/);
});

/** Targets two service ports claim (the generator shares addresses on purpose): each mode settles such a conflict its own way. */
function conflicting(d: Difference, snap: Snapshot): boolean {
  const [proto, addr] = d.target.split(' ');
  const claims = [...snap.services.values()].filter((s) => s.info.protocol === proto && targetsFor(s, 'IPv4', [NODE_IP]).some((t) => `${t.ip}:${t.port}` === addr));
  return claims.length > 1;
}

// Reported, not fixed here: for a service port without a ready endpoint the renderers disagree
// on how a packet is refused (REJECT or DROP: a Local-policy NodePort whose endpoints are all
// unready; an LB IP with source ranges and no endpoints, where the iptables mode lets the node's
// own connection through untranslated). No mode delivers such a packet to an endpoint: only
// differences in where packets go and whether they are masqueraded are asserted for them.
function refusedEverywhere(d: Difference, snap: Snapshot): boolean {
  const s = [...snap.services.values()].find((p) => p.info.name === d.service)!;
  return s.clusterEndpoints.length === 0 && d.outcomes.every((o) => 'verdict' in o.outcome && !o.outcome.endpoints.some((e) => e.includes(':')));
}

function randomDifferences(modes: ProxyMode[], seed: number): string[] {
  const snap = snapshot(randomPorts(rng(seed), 25));
  const config = backendConfig();
  const { differences } = compareModes(modes.map((m) => ({ mode: modeDescriptor(m)!, snapshot: snap, config })));
  return differences
    .filter((d) => !conflicting(d, snap) && !refusedEverywhere(d, snap) && !(modes.includes('ipvs') && localPolicyInside(d, snap)))
    .map(formatDifference);
}

test('randomized clusters: iptables and nftables agree', () => {
  for (let seed = 1; seed <= 6; seed++) assert.deepEqual(randomDifferences(['iptables', 'nftables'], seed), [], `seed ${seed}`);
});

test('randomized clusters: ipvs and nftables agree apart from Local policy seen from inside', () => {
  for (let seed = 1; seed <= 12; seed++) assert.deepEqual(randomDifferences(['ipvs', 'nftables'], seed), [], `seed ${seed}`);
});
