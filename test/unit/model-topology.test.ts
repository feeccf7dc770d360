import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { categorizeEndpoints, topologyModeFromHints } from '../../src/model/topology.js';
import type { Endpoint } from '../../src/model/types.js';

const NODE = 'node-a';

interface EpOpts {
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  local?: boolean;
  zones?: string[];
  nodes?: string[];
}

/** `ip:port` text plus conditions; serving defaults to ready, as in the API. */
function ep(addr: string, o: EpOpts = {}): Endpoint {
  const [ip, port] = addr.split(':');
  const ready = o.ready ?? true;
  return {
    ip: ip!,
    port: Number(port),
    ready,
    serving: o.serving ?? ready,
    terminating: o.terminating ?? false,
    isLocal: o.local ?? false,
    nodeName: o.local ? NODE : 'node-other',
    zone: '',
    hintsForZones: o.zones ?? [],
    hintsForNodes: o.nodes ?? [],
  };
}

interface Policy {
  internalLocal?: boolean;
  externalLocal?: boolean;
  nodePort?: number;
  externalIPs?: string[];
}

function info(p: Policy = {}) {
  return {
    nodePort: p.nodePort ?? 0,
    externalIPs: p.externalIPs ?? [],
    loadBalancerIPs: [],
    externalPolicyLocal: p.externalLocal ?? false,
    internalPolicyLocal: p.internalLocal ?? false,
  };
}

const names = (eps: Endpoint[]): string[] => eps.map((e) => `${e.ip}:${e.port}`).sort();

interface Case {
  name: string;
  zone?: string;
  policy?: Policy;
  endpoints: Endpoint[];
  cluster: string[];
  local: string[];
  all: string[];
  hasAny: boolean;
}

// Cases follow upstream's CategorizeEndpoints expectations. An empty list stands for
// "not used by this port" as well as "used but empty": the model exposes both as [].
const cases: Case[] = [
  {
    name: 'zone hints: only endpoints hinted for our zone',
    zone: 'zone-a',
    endpoints: [
      ep('10.1.2.3:80', { zones: ['zone-a'] }),
      ep('10.1.2.4:80', { zones: ['zone-b'] }),
      ep('10.1.2.5:80', { zones: ['zone-c'] }),
      ep('10.1.2.6:80', { zones: ['zone-a'] }),
    ],
    cluster: ['10.1.2.3:80', '10.1.2.6:80'],
    local: [],
    all: ['10.1.2.3:80', '10.1.2.6:80'],
    hasAny: true,
  },
  {
    name: 'one ready endpoint without zone hint: hints ignored',
    zone: 'zone-a',
    endpoints: [
      ep('10.1.2.3:80', { zones: ['zone-a'] }),
      ep('10.1.2.4:80', { zones: ['zone-b'] }),
      ep('10.1.2.5:80'),
      ep('10.1.2.6:80', { zones: ['zone-a'] }),
    ],
    cluster: ['10.1.2.3:80', '10.1.2.4:80', '10.1.2.5:80', '10.1.2.6:80'],
    local: [],
    all: ['10.1.2.3:80', '10.1.2.4:80', '10.1.2.5:80', '10.1.2.6:80'],
    hasAny: true,
  },
  {
    name: 'node has no zone label: hints ignored',
    zone: '',
    endpoints: [ep('10.1.2.3:80', { zones: ['zone-a'] })],
    cluster: ['10.1.2.3:80'],
    local: [],
    all: ['10.1.2.3:80'],
    hasAny: true,
  },
  {
    name: 'no endpoint hinted for our zone: hints ignored',
    zone: 'zone-b',
    endpoints: [ep('10.1.2.3:80', { zones: ['zone-a'] })],
    cluster: ['10.1.2.3:80'],
    local: [],
    all: ['10.1.2.3:80'],
    hasAny: true,
  },
  {
    name: 'unready endpoint in our zone is not used, its missing readiness does not block hints',
    zone: 'zone-a',
    endpoints: [
      ep('10.1.2.3:80', { zones: ['zone-a'] }),
      ep('10.1.2.4:80', { zones: ['zone-b'] }),
      ep('10.1.2.6:80', { zones: ['zone-a'], ready: false }),
      ep('10.1.2.7:80', { ready: false }),
    ],
    cluster: ['10.1.2.3:80'],
    local: [],
    all: ['10.1.2.3:80'],
    hasAny: true,
  },
  {
    name: 'only unready endpoints in our zone: hints ignored',
    zone: 'zone-a',
    endpoints: [
      ep('10.1.2.3:80', { zones: ['zone-a'], ready: false }),
      ep('10.1.2.4:80', { zones: ['zone-b'] }),
      ep('10.1.2.5:80', { zones: ['zone-c'] }),
    ],
    cluster: ['10.1.2.4:80', '10.1.2.5:80'],
    local: [],
    all: ['10.1.2.4:80', '10.1.2.5:80'],
    hasAny: true,
  },
  {
    name: 'several zone hints per endpoint',
    zone: 'zone-c',
    endpoints: [
      ep('10.1.2.3:80', { zones: ['zone-a', 'zone-b', 'zone-c'] }),
      ep('10.1.2.4:80', { zones: ['zone-b', 'zone-c'] }),
      ep('10.1.2.5:80', { zones: ['zone-b', 'zone-d'] }),
      ep('10.1.2.6:80', { zones: ['zone-c'] }),
    ],
    cluster: ['10.1.2.3:80', '10.1.2.4:80', '10.1.2.6:80'],
    local: [],
    all: ['10.1.2.3:80', '10.1.2.4:80', '10.1.2.6:80'],
    hasAny: true,
  },
  {
    name: 'node hints win over zone hints',
    zone: 'zone-a',
    endpoints: [
      ep('10.1.2.3:80', { zones: ['zone-a'], nodes: ['node-b'] }),
      ep('10.1.2.4:80', { zones: ['zone-a'], nodes: [NODE] }),
      ep('10.1.2.5:80', { zones: ['zone-b'], nodes: ['node-c'] }),
    ],
    cluster: ['10.1.2.4:80'],
    local: [],
    all: ['10.1.2.4:80'],
    hasAny: true,
  },
  {
    name: 'node hints missing on one endpoint: zone hints used instead',
    zone: 'zone-a',
    endpoints: [
      ep('10.1.2.3:80', { zones: ['zone-a'] }),
      ep('10.1.2.4:80', { zones: ['zone-a'], nodes: [NODE] }),
      ep('10.1.2.5:80', { zones: ['zone-b'], nodes: ['node-c'] }),
    ],
    cluster: ['10.1.2.3:80', '10.1.2.4:80'],
    local: [],
    all: ['10.1.2.3:80', '10.1.2.4:80'],
    hasAny: true,
  },
  {
    name: 'no endpoint hinted for our node: zone hints used',
    zone: 'zone-b',
    endpoints: [
      ep('10.1.2.3:80', { zones: ['zone-a'], nodes: ['node-x'] }),
      ep('10.1.2.4:80', { zones: ['zone-b'], nodes: ['node-y'] }),
    ],
    cluster: ['10.1.2.4:80'],
    local: [],
    all: ['10.1.2.4:80'],
    hasAny: true,
  },
  {
    name: 'eTP Local with NodePort: topology applies to cluster endpoints only',
    zone: 'zone-a',
    policy: { externalLocal: true, nodePort: 30080 },
    endpoints: [
      ep('10.1.2.3:80', { zones: ['zone-a'], local: true }),
      ep('10.1.2.4:80', { zones: ['zone-b'], local: true }),
      ep('10.1.2.5:80', { zones: ['zone-c'] }),
      ep('10.1.2.6:80', { zones: ['zone-a'] }),
    ],
    cluster: ['10.1.2.3:80', '10.1.2.6:80'],
    local: ['10.1.2.3:80', '10.1.2.4:80'],
    all: ['10.1.2.3:80', '10.1.2.4:80', '10.1.2.6:80'],
    hasAny: true,
  },
  {
    name: 'iTP Local with NodePort: both lists, topology ignored for local',
    zone: 'zone-a',
    policy: { internalLocal: true, nodePort: 30080 },
    endpoints: [
      ep('10.1.2.3:80', { zones: ['zone-a'], local: true }),
      ep('10.1.2.4:80', { zones: ['zone-b'], local: true }),
      ep('10.1.2.5:80', { zones: ['zone-c'] }),
      ep('10.1.2.6:80', { zones: ['zone-a'] }),
    ],
    cluster: ['10.1.2.3:80', '10.1.2.6:80'],
    local: ['10.1.2.3:80', '10.1.2.4:80'],
    all: ['10.1.2.3:80', '10.1.2.4:80', '10.1.2.6:80'],
    hasAny: true,
  },
  {
    name: 'iTP Local, no endpoints',
    policy: { internalLocal: true },
    endpoints: [],
    cluster: [],
    local: [],
    all: [],
    hasAny: false,
  },
  {
    name: 'iTP Local internal-only, all endpoints remote: none reachable, but some exist',
    policy: { internalLocal: true },
    endpoints: [ep('10.0.0.0:80'), ep('10.0.0.1:80')],
    cluster: [],
    local: [],
    all: [],
    hasAny: true,
  },
  {
    name: 'iTP Local internal-only, some local: no cluster endpoints at all',
    policy: { internalLocal: true },
    endpoints: [ep('10.0.0.0:80'), ep('10.0.0.1:80', { local: true })],
    cluster: [],
    local: ['10.0.0.1:80'],
    all: ['10.0.0.1:80'],
    hasAny: true,
  },
  {
    name: 'Cluster policy, no endpoint ready or terminating',
    endpoints: [ep('10.0.0.0:80', { ready: false }), ep('10.0.0.1:80', { ready: false })],
    cluster: [],
    local: [],
    all: [],
    hasAny: false,
  },
  {
    name: 'Cluster policy, some ready: unready never used',
    endpoints: [ep('10.0.0.0:80', { ready: false }), ep('10.0.0.1:80')],
    cluster: ['10.0.0.1:80'],
    local: [],
    all: ['10.0.0.1:80'],
    hasAny: true,
  },
  {
    name: 'Cluster policy, all terminating: serving-terminating fallback',
    endpoints: [
      ep('10.0.0.0:80', { ready: false, serving: true, terminating: true, local: true }),
      ep('10.0.0.1:80', { ready: false, serving: true, terminating: true }),
      ep('10.0.0.2:80', { ready: false, serving: false, terminating: true }),
    ],
    cluster: ['10.0.0.0:80', '10.0.0.1:80'],
    local: [],
    all: ['10.0.0.0:80', '10.0.0.1:80'],
    hasAny: true,
  },
  {
    name: 'terminating endpoints are not used while a ready one exists',
    endpoints: [ep('10.0.0.0:80', { ready: false, serving: true, terminating: true }), ep('10.0.0.1:80')],
    cluster: ['10.0.0.1:80'],
    local: [],
    all: ['10.0.0.1:80'],
    hasAny: true,
  },
  {
    name: 'iTP Local, eTP Cluster, NodePort',
    policy: { internalLocal: true, nodePort: 30080 },
    endpoints: [ep('10.0.0.0:80', { local: true }), ep('10.0.0.1:80')],
    cluster: ['10.0.0.0:80', '10.0.0.1:80'],
    local: ['10.0.0.0:80'],
    all: ['10.0.0.0:80', '10.0.0.1:80'],
    hasAny: true,
  },
  {
    name: 'iTP Cluster, eTP Local, NodePort',
    policy: { externalLocal: true, nodePort: 30080 },
    endpoints: [ep('10.0.0.0:80', { local: true }), ep('10.0.0.1:80')],
    cluster: ['10.0.0.0:80', '10.0.0.1:80'],
    local: ['10.0.0.0:80'],
    all: ['10.0.0.0:80', '10.0.0.1:80'],
    hasAny: true,
  },
  {
    name: 'iTP Local, eTP Local, all remote',
    policy: { internalLocal: true, externalLocal: true, nodePort: 30080 },
    endpoints: [ep('10.0.0.0:80'), ep('10.0.0.1:80')],
    cluster: ['10.0.0.0:80', '10.0.0.1:80'],
    local: [],
    all: ['10.0.0.0:80', '10.0.0.1:80'],
    hasAny: true,
  },
  {
    name: 'iTP Local, eTP Local, all remote and terminating: cluster falls back, local empty',
    policy: { internalLocal: true, externalLocal: true, nodePort: 30080 },
    endpoints: [
      ep('10.0.0.0:80', { ready: false, serving: true, terminating: true }),
      ep('10.0.0.1:80', { ready: false, serving: true, terminating: true }),
    ],
    cluster: ['10.0.0.0:80', '10.0.0.1:80'],
    local: [],
    all: ['10.0.0.0:80', '10.0.0.1:80'],
    hasAny: true,
  },
  {
    name: 'eTP Local: local terminating fallback, not-serving never used',
    policy: { externalLocal: true, nodePort: 30080 },
    endpoints: [
      ep('10.0.0.0:80'),
      ep('10.0.0.1:80', { ready: false, serving: false, local: true }),
      ep('10.0.0.2:80', { ready: false, serving: true, terminating: true, local: true }),
      ep('10.0.0.3:80', { ready: false, serving: true, terminating: true }),
    ],
    cluster: ['10.0.0.0:80'],
    local: ['10.0.0.2:80'],
    all: ['10.0.0.0:80', '10.0.0.2:80'],
    hasAny: true,
  },
  {
    name: 'eTP Local ignored when not externally accessible',
    policy: { externalLocal: true },
    endpoints: [ep('10.0.0.0:80'), ep('10.0.0.1:80', { local: true })],
    cluster: ['10.0.0.0:80', '10.0.0.1:80'],
    local: [],
    all: ['10.0.0.0:80', '10.0.0.1:80'],
    hasAny: true,
  },
  {
    name: 'eTP Local with external IPs counts as externally accessible',
    policy: { externalLocal: true, externalIPs: ['192.0.2.1'] },
    endpoints: [ep('10.0.0.0:80'), ep('10.0.0.1:80', { local: true })],
    cluster: ['10.0.0.0:80', '10.0.0.1:80'],
    local: ['10.0.0.1:80'],
    all: ['10.0.0.0:80', '10.0.0.1:80'],
    hasAny: true,
  },
];

describe('categorizeEndpoints', () => {
  for (const c of cases) {
    test(c.name, () => {
      const r = categorizeEndpoints(c.endpoints, info(c.policy), NODE, c.zone ?? '');
      assert.deepEqual(names(r.clusterEndpoints), c.cluster, 'cluster endpoints');
      assert.deepEqual(names(r.localEndpoints), c.local, 'local endpoints');
      assert.deepEqual(names(r.allReachableEndpoints), c.all, 'all reachable endpoints');
      assert.equal(r.hasAnyEndpoints, c.hasAny, 'hasAnyEndpoints');
    });
  }

  test('allReachableEndpoints is sorted by ip:port text', () => {
    const r = categorizeEndpoints(
      [
        ep('10.0.0.1:80', { zones: ['zone-a'] }),
        ep('10.0.0.2:80', { zones: ['zone-b'], local: true }),
        ep('10.0.0.3:80', { zones: ['zone-a'] }),
      ],
      info({ externalLocal: true, nodePort: 30000 }),
      NODE,
      'zone-a',
    );
    assert.deepEqual(
      r.allReachableEndpoints.map((e) => e.ip),
      ['10.0.0.1', '10.0.0.2', '10.0.0.3'],
    );
  });

  test('all ready: the categories share the endpoint list; one not ready: a filtered copy, the list untouched', () => {
    const all = [ep('10.0.0.1:80', { local: true }), ep('10.0.0.2:80', { local: true })];
    const r = categorizeEndpoints(all, info({ externalLocal: true, nodePort: 30000 }), NODE, '');
    assert.equal(r.clusterEndpoints, all);
    assert.equal(r.localEndpoints, all);
    const some = [ep('10.0.0.1:80', { local: true }), ep('10.0.0.2:80', { ready: false, local: true })];
    const s = categorizeEndpoints(some, info({ externalLocal: true, nodePort: 30000 }), NODE, '');
    assert.deepEqual(names(s.clusterEndpoints), names([some[0]!]));
    assert.deepEqual(names(s.localEndpoints), names([some[0]!]));
    assert.equal(some.length, 2);
  });
});

describe('topologyModeFromHints', () => {
  test('reports the mode in use', () => {
    assert.equal(topologyModeFromHints([ep('10.0.0.1:80', { nodes: [NODE], zones: ['z'] })], NODE, 'z'), 'PreferSameNode');
    assert.equal(topologyModeFromHints([ep('10.0.0.1:80', { zones: ['z'] })], NODE, 'z'), 'PreferSameZone');
    assert.equal(topologyModeFromHints([ep('10.0.0.1:80', { zones: ['z'] })], NODE, 'y'), '');
    assert.equal(topologyModeFromHints([ep('10.0.0.1:80', { ready: false, zones: ['z'] })], NODE, 'z'), '');
  });
});
