// `explain --compare-modes`: the renderers of different modes cross-checked against each other.
// Every service target, from each kind of client, must meet the same verdict, endpoints and
// masquerading in each mode, on the example cluster and on randomized ones.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { modeDescriptor, type ModeDescriptor, type ProxyMode } from '../../src/backend/modes.js';
import { BY_DESIGN } from '../../src/explain/by-design.js';
import { compareModes, formatDifference, targetsFor, type ByDesignDifference, type Difference } from '../../src/explain/compare.js';
import type { ServicePortState, Snapshot } from '../../src/model/types.js';
import { backendConfig, randomPorts, rng, snapshot } from '../support/snapshots.js';
import { COMMAND } from '../support/command.js';

const EXAMPLES = new URL('../../../examples', import.meta.url).pathname;
const run = promisify(execFile);
const NODE_IP = backendConfig().nodeIPs[0]!;

async function compare(modes: string, ...extra: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const args = extra.includes('--hostname-override') ? extra : ['--hostname-override', 'node-1', '--cluster-cidr', '10.244.0.0/16', ...extra];
  try {
    const { stdout, stderr } = await run(process.execPath, [COMMAND, 'explain', '--compare-modes', modes, '--manifests', EXAMPLES, ...args]);
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

const MODES: ProxyMode[] = ['iptables', 'nftables', 'ipvs'];

interface CompareJSON {
  modes: string[];
  families: Array<{ family: string; compared: number; differences: Difference[]; byDesign: ByDesignDifference[] }>;
}

// All three modes at once: a by-design difference needs the non-ipvs modes to agree, so no
// unexpected difference here means none between any two of them. Without local detection only
// ipvs masquerades the node's own traffic; with it, every mode does.
test('examples on either node, with and without a cluster CIDR: no unexpected difference between any two modes', async () => {
  const runs = ['node-1', 'node-2'].flatMap((node) => [['--cluster-cidr', '10.244.0.0/16'], []].map((extra) => ({ node, extra })));
  const results = await Promise.all(runs.map(({ node, extra }) => compare(MODES.join(','), '--hostname-override', node, '--json', ...extra)));
  results.forEach((r, i) => {
    const { node, extra } = runs[i]!;
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const fam = (JSON.parse(r.stdout) as CompareJSON).families[0]!;
    assert.ok(fam.compared > 40);
    assert.deepEqual(fam.differences.map(formatDifference), [], `${node} ${extra.join(' ')}`);
    const reasons = new Set(fam.byDesign.map((d) => d.reason));
    assert.ok(reasons.has(BY_DESIGN.ipvsLocalExternal), r.stdout);
    assert.equal(reasons.has(BY_DESIGN.ipvsNodeMasquerade), extra.length === 0, r.stdout);
    for (const d of fam.byDesign.filter((x) => x.reason === BY_DESIGN.ipvsLocalExternal)) {
      assert.match(`${d.service} ${d.target} ${d.client}`, /^default\/web-local:http TCP (192\.0\.2\.11:80|10\.0\.0\.[12]:30082) (local pod|other-node pod|node) /);
    }
    for (const d of fam.byDesign.filter((x) => x.reason === BY_DESIGN.ipvsNodeMasquerade)) assert.match(d.client, /^node /);
  });
});

test('the text output lists the differences by design apart, with their reason, and exits 0', async () => {
  const r = await compare('ipvs,nftables', '--hostname-override', 'node-1');
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /^no unexpected differences between ipvs and nftables: \d+ IPv4 service targets/);
  assert.match(r.stdout, /\n9 differences by design, as upstream:\n- ipvs masquerades the node's own connections/);
  assert.match(r.stdout, /\n {4}ipvs: ACCEPT -> 10\.244\.1\.10:8080, 10\.244\.1\.11:8080\n/);
});

test('--json lists the families compared and the differences', async () => {
  const r = await compare('iptables,nftables', '--json');
  assert.equal(r.code, 0);
  const j = JSON.parse(r.stdout) as CompareJSON;
  assert.deepEqual(j.modes, ['iptables', 'nftables']);
  assert.equal(j.families[0]!.family, 'IPv4');
  assert.ok(j.families[0]!.compared > 40);
  assert.deepEqual(j.families[0]!.differences, []);
  assert.deepEqual(j.families[0]!.byDesign, []);
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

function randomCompare(modes: ProxyMode[], seed: number): { unexpected: string[]; byDesign: number } {
  const snap = snapshot(randomPorts(rng(seed), 25));
  const config = backendConfig();
  const { differences, byDesign } = compareModes(modes.map((m) => ({ mode: modeDescriptor(m)!, snapshot: snap, config })));
  return { unexpected: differences.filter((d) => !conflicting(d, snap)).map(formatDifference), byDesign: byDesign.length };
}

test('randomized clusters: no unexpected difference between any two modes', () => {
  let byDesign = 0;
  for (let seed = 1; seed <= 8; seed++) {
    const r = randomCompare(MODES, seed);
    assert.deepEqual(r.unexpected, [], `seed ${seed}`);
    byDesign += r.byDesign;
  }
  // The generator makes Local-policy services with external addresses: ipvs differs there by design.
  assert.ok(byDesign > 0);
  // Without ipvs, nothing is by design.
  for (let seed = 1; seed <= 3; seed++) assert.deepEqual(randomCompare(['iptables', 'nftables'], seed), { unexpected: [], byDesign: 0 }, `seed ${seed}`);
});

test('the randomized clusters hold the cases that once split the renderers', () => {
  const ports = [1, 2, 3, 4, 5, 6, 7, 8].flatMap((seed) => randomPorts(rng(seed), 25));
  const noEndpoints = (p: ServicePortState): boolean => p.clusterEndpoints.length === 0;
  // A Local NodePort whose endpoints are all unready; an LB IP with source ranges and no endpoints.
  assert.ok(ports.some((p) => p.info.externalPolicyLocal && p.info.nodePort > 0 && p.endpoints.length > 0 && p.endpoints.every((e) => !e.ready)));
  assert.ok(ports.some((p) => p.info.loadBalancerSourceRanges.length > 0 && noEndpoints(p)));
  assert.ok(ports.some((p) => p.info.sessionAffinity.clientIPTimeoutSeconds !== undefined && p.info.externalPolicyLocal));
  assert.ok(ports.some((p) => p.info.internalPolicyLocal));
});

test('a renderer disagreement is reported as unexpected, not by design', () => {
  const snap = snapshot(randomPorts(rng(3), 25));
  const config = backendConfig();
  const ipt = modeDescriptor('iptables')!;
  // The same rules without their masquerade marks: what a renderer forgetting masquerading would write.
  const tampered: ModeDescriptor = {
    ...ipt,
    traceableRules: (s, c) => {
      const r = ipt.traceableRules!(s, c);
      if (r.syntax !== 'iptables') throw new Error('iptables rules expected');
      return { ...r, text: r.text.split('\n').filter((l) => !/^-A KUBE-(EXT|SVC|SEP)-.*-j KUBE-MARK-MASQ/.test(l)).join('\n') };
    },
  };
  for (const modes of [[modeDescriptor('nftables')!, tampered], [modeDescriptor('ipvs')!, tampered]]) {
    const { differences } = compareModes(modes.map((mode) => ({ mode, snapshot: snap, config })));
    assert.ok(differences.some((d) => d.outcomes.some((o) => 'endpoints' in o.outcome && o.outcome.endpoints.some((e) => e.endsWith('+masq')))), modes[0]!.name);
  }
});
