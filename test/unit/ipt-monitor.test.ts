// Which lines of `xtables-monitor -e` (as iptables-nft 1.8.9 prints them) are foreign changes to
// the iptables mode's rules, and which commits are ours by the committing PID: a wrong "no"
// leaves a change unrepaired until the backstop, a wrong "yes" costs a read-back.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { OwnCommits, generationLine, parseXtablesEvent, touchesOurRules } from '../../src/backend/iptables/monitor.js';
import { PRINT_PID, splitPid } from '../../src/backend/iptables/own-tools.js';
import { run } from '../../src/node/exec.js';

const ours = (line: string, family: 'IPv4' | 'IPv6' = 'IPv4'): boolean => {
  const e = parseXtablesEvent(line);
  assert.ok(e, `parsed: ${line}`);
  return touchesOurRules(family, e);
};

describe('xtables-monitor lines', () => {
  it('parses rule, chain and table events and generation lines', () => {
    assert.deepEqual(parseXtablesEvent(' EVENT: -4 -t nat -A KUBE-SEP-2CTW -p tcp -m tcp -j DNAT --to-destination 10.250.0.0:8080'), {
      verb: 'add',
      kind: 'rule',
      family: 'ip',
      table: 'nat',
      name: 'KUBE-SEP-2CTW',
      rest: ' -p tcp -m tcp -j DNAT --to-destination 10.250.0.0:8080',
    });
    assert.deepEqual(parseXtablesEvent(' EVENT: -6 -t filter -X KUBE-FORWARD'), { verb: 'delete', kind: 'chain', family: 'ip6', table: 'filter', name: 'KUBE-FORWARD', rest: '' });
    assert.deepEqual(parseXtablesEvent(' EVENT: nft: DEL table: table nat ip flags 0 use 3 handle 1'), {
      verb: 'delete',
      kind: 'table',
      family: 'ip',
      table: 'nat',
      name: undefined,
      rest: '',
    });
    assert.equal(parseXtablesEvent(' EVENT: # nft: ip nat PREROUTING use 1 type nat hook prerouting prio -100 policy accept'), undefined);
    assert.deepEqual(generationLine('NEWGEN: GENID=37 PID=27954 NAME=iptables-nft-re'), { gen: 37, pid: 27954 });
    assert.equal(generationLine(' EVENT: -4 -t nat -N KUBE-X'), undefined);
  });

  it('a rule of one of our chains deleted, added, or the chain deleted: ours', () => {
    assert.equal(ours(' EVENT: -4 -t nat -D KUBE-SEP-ABCDEF -p tcp -j DNAT --to-destination 10.0.0.1:80'), true);
    assert.equal(ours(' EVENT: -4 -t nat -A KUBE-SERVICES -j RETURN'), true);
    assert.equal(ours(' EVENT: -4 -t nat -X KUBE-SERVICES'), true);
    assert.equal(ours(' EVENT: -4 -t filter -N KUBE-FORWARD'), true);
  });

  it('a rule in a built-in chain counts only when it names one of our chains', () => {
    assert.equal(ours(' EVENT: -4 -t nat -D PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'), true);
    assert.equal(ours(' EVENT: -4 -t nat -I PREROUTING -j KUBE-SERVICES'), true);
    assert.equal(ours(' EVENT: -4 -t filter -A INPUT -j ACCEPT'), false);
    assert.equal(ours(' EVENT: -4 -t filter -D INPUT -j ACCEPT'), false);
  });

  it('a deleted table is ours; other tools, tables and families are not', () => {
    assert.equal(ours(' EVENT: nft: DEL table: table nat ip flags 0 use 3 handle 1'), true);
    assert.equal(ours(' EVENT: nft: DEL table: table nat ip6 flags 0 use 3 handle 1', 'IPv6'), true);
    assert.equal(ours(' EVENT: nft: DEL table: table nat ip6 flags 0 use 3 handle 1'), false, 'the other family');
    assert.equal(ours(' EVENT: -4 -t nat -A DOCKER -j RETURN'), false);
    assert.equal(ours(' EVENT: -4 -t raw -D PREROUTING -j KUBE-X'), false);
    assert.equal(ours(' EVENT: nft: NEW table: table nat ip flags 0 use 0 handle 1'), false);
  });
});

describe('telling our commits from foreign ones by PID', () => {
  const setup = (own: Set<number>): { commits: OwnCommits; foreign: string[][] } => {
    const foreign: string[][] = [];
    return { commits: new OwnCommits((p) => own.has(p), (l) => foreign.push(l)), foreign };
  };

  it('a generation from a known PID of ours is dropped, an unknown one outside our writes is foreign', () => {
    const { commits, foreign } = setup(new Set([100]));
    commits.generation(100, ['a']);
    commits.generation(200, ['b']);
    assert.deepEqual(foreign, [['b']]);
  });

  it('during a write, an unknown PID is held until the write ends: ours when the tool reports it, else foreign', async () => {
    const own = new Set<number>();
    const { commits, foreign } = setup(own);
    await commits.write(async () => {
      commits.generation(300, ['ours, printed before the tool returned']);
      commits.generation(400, ['someone else, meanwhile']);
      assert.deepEqual(foreign, [], 'nothing decided while the write runs');
      own.add(300);
      commits.noted(300);
    });
    assert.deepEqual(foreign, [['someone else, meanwhile']]);
    commits.generation(300, ['ours, printed after the write ended']);
    assert.equal(foreign.length, 1);
  });

  it('a failed write still releases what it held', async () => {
    const { commits, foreign } = setup(new Set());
    await assert.rejects(
      commits.write(async () => {
        commits.generation(500, ['x']);
        throw new Error('restore failed');
      }),
    );
    assert.deepEqual(foreign, [['x']]);
  });

  it('a tool run under PRINT_PID reports the PID it runs as', async () => {
    const res = await run([...PRINT_PID, 'sh', '-c', 'echo "$$"; echo out'], undefined);
    const { pid, rest } = splitPid(res.stdout);
    assert.ok(pid !== undefined);
    assert.equal(rest, `${pid}\nout\n`, 'the tool itself sees the same PID (exec in place)');
  });
});
