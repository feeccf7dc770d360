// Which lines of `nft monitor` (as printed for iptables-nft 1.8.9 commands) are foreign changes
// to the iptables mode's rules: a wrong "no" leaves a change unrepaired until the backstop, a
// wrong "yes" costs a read-back.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseEvent } from '../../src/backend/nftables/monitor.js';
import { touchesOurRules } from '../../src/backend/iptables/monitor.js';

const ours = (line: string, family: 'IPv4' | 'IPv6' = 'IPv4'): boolean => {
  const e = parseEvent(line);
  assert.ok(e, `parsed: ${line}`);
  return touchesOurRules(family, e);
};

describe('iptables-nft changes the monitor reports', () => {
  it('a rule of one of our chains deleted, added, or the chain deleted: ours', () => {
    assert.equal(ours('delete rule ip nat KUBE-SEP-ABCDEF handle 12'), true);
    assert.equal(ours('add rule ip nat KUBE-SERVICES counter packets 0 bytes 0 return'), true);
    assert.equal(ours('delete chain ip nat KUBE-SERVICES'), true);
    assert.equal(ours('create chain ip filter KUBE-FORWARD'), true);
  });

  it('a deleted rule in a built-in chain (the monitor prints only its handle): maybe our jump, so ours', () => {
    assert.equal(ours('delete rule ip nat PREROUTING handle 5'), true);
    assert.equal(ours('delete chain ip nat PREROUTING'), true);
  });

  it('a rule added to a built-in chain counts only when it names one of our chains', () => {
    assert.equal(ours('insert rule ip nat PREROUTING  counter packets 0 bytes 0 jump KUBE-SERVICES'), true);
    assert.equal(ours('add rule ip filter INPUT counter packets 0 bytes 0 accept'), false);
  });

  it('a deleted table is ours; other tools, tables and families are not', () => {
    assert.equal(ours('delete table ip nat'), true);
    assert.equal(ours('delete table ip6 nat', 'IPv6'), true);
    assert.equal(ours('delete table ip6 nat'), false, 'the other family');
    assert.equal(ours('add rule ip nat DOCKER counter packets 0 bytes 0 return'), false);
    assert.equal(ours('delete rule ip nat DOCKER handle 3'), false);
    assert.equal(ours('delete rule ip raw PREROUTING handle 3'), false);
    assert.equal(ours('delete rule ip kube-proxy services handle 3'), false, 'the nftables mode table');
    assert.equal(ours('add table ip nat'), false);
  });
});
