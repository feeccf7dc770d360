// The classification of mode differences: by design only when a documented ipvs behaviour
// explains the whole difference, and the modes on each side agree among themselves.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BY_DESIGN, byDesignReason, type DifferenceFacts, type ModeOutcome, type Outcome } from '../../src/explain/by-design.js';

const ALL = ['10.244.1.10:8080', '10.244.2.10:8080'];
const LOCAL = ['10.244.1.10:8080'];
const accept = (eps: string[], masq = false): Outcome => ({ verdict: 'ACCEPT', endpoints: eps.map((e) => (masq ? `${e}+masq` : e)) });
const modes = (ipvs: Outcome, nft: Outcome, ipt: Outcome = nft): ModeOutcome[] => [
  { mode: 'ipvs', outcome: ipvs },
  { mode: 'nftables', outcome: nft },
  { mode: 'iptables', outcome: ipt },
];
const facts = (over: Partial<DifferenceFacts>): DifferenceFacts => ({
  client: 'node',
  clusterIP: true,
  externalPolicyLocal: false,
  localEndpoints: LOCAL,
  outcomes: [],
  ...over,
});

test('the node masqueraded to a service address in ipvs only is by design', () => {
  assert.equal(byDesignReason(facts({ outcomes: modes(accept(ALL, true), accept(ALL)) })), BY_DESIGN.ipvsNodeMasquerade);
});

test('masquerading differences that ipvs does not explain are unexpected', () => {
  // Another client, the masquerade on the other side, other endpoints, or the other modes disagreeing.
  assert.equal(byDesignReason(facts({ client: 'local pod', outcomes: modes(accept(ALL, true), accept(ALL)) })), undefined);
  assert.equal(byDesignReason(facts({ outcomes: modes(accept(ALL), accept(ALL, true)) })), undefined);
  assert.equal(byDesignReason(facts({ outcomes: modes(accept(LOCAL, true), accept(ALL)) })), undefined);
  assert.equal(byDesignReason(facts({ outcomes: modes(accept(ALL, true), accept(ALL), accept(LOCAL)) })), undefined);
  assert.equal(byDesignReason(facts({ outcomes: modes(accept(ALL, true), { error: 'x' } as unknown as Outcome) })), undefined);
  // Without ipvs there is nothing by design.
  assert.equal(byDesignReason(facts({ outcomes: modes(accept(ALL), accept(ALL, true)).map((o) => (o.mode === 'ipvs' ? { ...o, mode: 'x' } : o)) })), undefined);
});

test('ipvs serving a Local external address from local endpoints to clients inside is by design', () => {
  const local = { clusterIP: false, externalPolicyLocal: true };
  for (const client of ['node', 'local pod', 'other-node pod'] as const) {
    assert.equal(byDesignReason(facts({ ...local, client, outcomes: modes(accept(LOCAL), accept(ALL)) })), BY_DESIGN.ipvsLocalExternal);
  }
  // No local endpoint: ipvs drops.
  assert.equal(byDesignReason(facts({ ...local, localEndpoints: [], outcomes: modes({ verdict: 'DROP', endpoints: [] }, accept(ALL)) })), BY_DESIGN.ipvsLocalExternal);
});

test('Local-policy differences the rule does not cover are unexpected', () => {
  const local = { clusterIP: false, externalPolicyLocal: true };
  // An external client, the cluster IP, Cluster policy, a remote endpoint or masquerading in ipvs, a REJECT.
  assert.equal(byDesignReason(facts({ ...local, client: 'external', outcomes: modes(accept(LOCAL), accept(ALL)) })), undefined);
  assert.equal(byDesignReason(facts({ ...local, clusterIP: true, client: 'local pod', outcomes: modes(accept(LOCAL), accept(ALL)) })), undefined);
  assert.equal(byDesignReason(facts({ clusterIP: false, client: 'local pod', outcomes: modes(accept(LOCAL), accept(ALL)) })), undefined);
  assert.equal(byDesignReason(facts({ ...local, client: 'local pod', outcomes: modes(accept(['10.244.2.10:8080']), accept(ALL)) })), undefined);
  assert.equal(byDesignReason(facts({ ...local, client: 'local pod', outcomes: modes(accept(LOCAL, true), accept(ALL)) })), undefined);
  assert.equal(byDesignReason(facts({ ...local, localEndpoints: [], outcomes: modes({ verdict: 'REJECT', endpoints: [] }, accept(ALL)) })), undefined);
});
