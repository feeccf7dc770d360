// The IPVS backend's apply layer against fake kernel tools (a PATH of scripts that log each
// call and answer from files): what one endpoint change sends, graceful termination, verify.
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { IpvsBackend } from '../../src/backend/ipvs/backend.js';
import { backendConfig, endpoint, localEndpoint, servicePort, snapshot } from '../support/snapshots.js';

const TOOLS = ['ip', 'ipvsadm', 'ipset', 'sysctl', 'iptables-legacy', 'iptables-legacy-save', 'iptables-legacy-restore', 'conntrack'];

// Each call appends "tool args" and its stdin (indented) to calls.log; `ipvsadm -Sn`, `ipvsadm
// -Ln` and `ipset save` print the files of those names. Fed through a pipe (not a file), `ipvsadm --restore`
// and `ipset -` are the long-lived sessions: each line is logged as "session <tool>: <line>" and
// the barrier answered; a line containing the text of session.fail gets an error, one containing
// that of session.die ends the tool.
const FAKE = `#!/bin/sh
dir=$(dirname "$0")
name=$(basename "$0")
if [ ! -f /dev/stdin ] && { [ "$name $*" = "ipvsadm --restore" ] || [ "$name $*" = "ipset -" ]; }; then
  while IFS= read -r l; do
    fail=$(cat "$dir/session.fail" 2>/dev/null)
    die=$(cat "$dir/session.die" 2>/dev/null)
    case "$l" in
      "-L --timeout") echo "Timeout (tcp tcpfin udp): 900 120 300" ;;
      version) echo "ipset v7.17, protocol version: 7" ;;
      *)
        echo "session $name: $l" >> "$dir/calls.log"
        case "$l" in *"\${die:-@none}"*) exit 1 ;; *"\${fail:-@none}"*) echo "No such destination" >&2 ;; esac ;;
    esac
  done
  exit 0
fi
{ echo "$name $*"; sed 's/^/  /'; } >> "$dir/calls.log"
case "$name $*" in
  "ipvsadm -Sn") cat "$dir/ipvs.save" 2>/dev/null ;;
  "ipvsadm -Ln") cat "$dir/ipvs.list" 2>/dev/null ;;
  "ipset save") cat "$dir/ipset.save" 2>/dev/null ;;
esac
exit 0
`;

const web = (ips: string[]) =>
  servicePort({ namespace: 'ns1', serviceName: 'web', clusterIP: '10.96.0.10', port: 80, endpoints: ips.map((ip) => endpoint(ip, 8080)) });

describe('IPVS backend apply (fake tools)', () => {
  let dir: string;
  const calls = (): string => readFileSync(join(dir, 'calls.log'), 'utf8');
  const reset = (): void => writeFileSync(join(dir, 'calls.log'), '');
  let clock = 0;
  let be: IpvsBackend;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'ipvs-fake-'));
    writeFileSync(join(dir, 'fake'), FAKE);
    chmodSync(join(dir, 'fake'), 0o755);
    for (const t of TOOLS) symlinkSync(join(dir, 'fake'), join(dir, t));
    reset();
    be = new IpvsBackend(
      { ...backendConfig(), scheduler: 'rr' },
      { wrap: ['env', `PATH=${dir}:/usr/bin:/bin`], flavour: 'legacy', drainCheckMs: 3_600_000, drainBoundMs: 60_000, now: () => clock },
    );
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('the first sync creates the virtual server, its real servers, the sets, the chains and kube-ipvs0 addresses', async () => {
    await be.sync(snapshot([web(['10.244.1.5', '10.244.2.5'])]));
    const log = calls();
    assert.match(log, /^ipvsadm --restore\n {2}-A -t 10\.96\.0\.10:80 -s rr\n {2}-a -t 10\.96\.0\.10:80 -r 10\.244\.1\.5:8080 -m -w 1\n {2}-a -t 10\.96\.0\.10:80 -r 10\.244\.2\.5:8080 -m -w 1\n/m);
    assert.match(log, /^ipset restore\n[\s\S]*^ {2}add KUBE-CLUSTER-IP 10\.96\.0\.10,tcp:80$/m);
    assert.match(log, /^ip -batch -\n {2}addr add 10\.96\.0\.10\/32 dev kube-ipvs0\n/m);
    assert.match(log, /^iptables-legacy-restore --noflush/m);
    assert.match(log, /^sysctl -q -w (\S+ )*net\/ipv4\/vs\/conntrack=1( |$)/m);
  });

  test('removing one endpoint sends one ipvsadm line (weight 0) through the session and starts no tool', async () => {
    writeFileSync(join(dir, 'ipvs.list'), 'TCP  10.96.0.10:80 rr\n  -> 10.244.1.5:8080 Masq 1 0 0\n  -> 10.244.2.5:8080 Masq 0 2 1\n');
    reset();
    await be.sync(snapshot([web(['10.244.1.5'])]));
    // The session answered the barrier only after logging the line: it is there now.
    assert.equal(calls(), 'session ipvsadm: -e -t 10.96.0.10:80 -r 10.244.2.5:8080 -m -w 0\n');
    assert.deepEqual(be.drainingServers(), ['-t 10.96.0.10:80 10.244.2.5:8080']);
  });

  test('a draining real server is deleted once its connections are gone', async () => {
    reset();
    assert.equal(await be.checkDraining(), 0, 'still has 3 connections');
    writeFileSync(join(dir, 'ipvs.list'), 'TCP  10.96.0.10:80 rr\n  -> 10.244.1.5:8080 Masq 1 0 0\n  -> 10.244.2.5:8080 Masq 0 0 0\n');
    assert.equal(await be.checkDraining(), 1);
    assert.match(calls(), /^session ipvsadm: -d -t 10\.96\.0\.10:80 -r 10\.244\.2\.5:8080$/m);
    assert.deepEqual(be.drainingServers(), []);
  });

  test('past the bound, a draining real server is deleted even with connections', async () => {
    writeFileSync(join(dir, 'ipvs.list'), 'TCP  10.96.0.10:80 rr\n  -> 10.244.1.5:8080 Masq 0 5 0\n');
    await be.sync(snapshot([web([])]));
    assert.equal(await be.checkDraining(), 0);
    clock += 60_000;
    reset();
    assert.equal(await be.checkDraining(), 1);
    assert.match(calls(), /^session ipvsadm: -d -t 10\.96\.0\.10:80 -r 10\.244\.1\.5:8080$/m);
  });

  test('a removed UDP endpoint is deleted at once (UDP has no connection end to wait for)', async () => {
    const dns = (ips: string[]) =>
      servicePort({ namespace: 'ns1', serviceName: 'dns', clusterIP: '10.96.0.53', port: 53, protocol: 'UDP', endpoints: ips.map((ip) => endpoint(ip, 5353)) });
    await be.sync(snapshot([dns(['10.244.1.5', '10.244.2.5'])]));
    writeFileSync(join(dir, 'ipvs.list'), 'UDP  10.96.0.53:53 rr\n  -> 10.244.1.5:5353 Masq 1 0 4\n  -> 10.244.2.5:5353 Masq 1 0 4\n');
    reset();
    await be.sync(snapshot([dns(['10.244.1.5'])]));
    assert.match(calls(), /^session ipvsadm: -d -u 10\.96\.0\.53:53 -r 10\.244\.2\.5:5353$/m);
    assert.deepEqual(be.drainingServers(), []);
  });

  test('verify finds a virtual server deleted behind its back and restores it', async () => {
    await be.sync(snapshot([web(['10.244.1.5'])]));
    // The kernel lost everything: empty -Sn, sets and addresses.
    writeFileSync(join(dir, 'ipvs.save'), '');
    reset();
    const res = await be.verify();
    assert.ok(res.repaired > 0, JSON.stringify(res));
    assert.match(res.differences.join('\n'), /ipvsadm command needed: 2/);
    assert.match(calls(), /^ {2}-A -t 10\.96\.0\.10:80 -s rr$/m);
    assert.equal(be.kernelInSync(), true);
  });

  test('a new local endpoint changes a large set by one line, not a flush and refill', async () => {
    const local = servicePort({ namespace: 'ns1', serviceName: 'web', clusterIP: '10.96.0.10', port: 80, endpoints: [endpoint('10.244.1.5', 8080), localEndpoint('10.244.1.9', 8080)] });
    reset();
    await be.sync(snapshot([local]));
    const log = calls();
    assert.match(log, /^session ipset: add KUBE-LOOP-BACK 10\.244\.1\.9,tcp:8080,10\.244\.1\.9$/m);
    assert.doesNotMatch(log, /^ {2}flush |^ip -batch|^ipset restore/m);
  });

  test('an error in the session ends it, and the sync is done again in full with one-shot tools', async () => {
    writeFileSync(join(dir, 'session.fail'), '10.244.3.5');
    reset();
    await be.sync(snapshot([web(['10.244.1.5', '10.244.3.5'])]));
    const log = calls();
    assert.match(log, /^session ipvsadm: -a -t 10\.96\.0\.10:80 -r 10\.244\.3\.5:8080 -m -w 1$/m);
    assert.match(log, /^ipvsadm -Sn$/m, 'the kernel is read again');
    assert.match(log, /^ipvsadm --restore\n(?: {2}.*\n)* {2}-a -t 10\.96\.0\.10:80 -r 10\.244\.3\.5:8080 -m -w 1$/m, 'and written by a one-shot ipvsadm');
    assert.match(log, /^ipset restore$/m);
    assert.equal(be.syncFailures, 0);
    rmSync(join(dir, 'session.fail'));
    reset();
    await be.sync(snapshot([web(['10.244.1.5', '10.244.3.5', '10.244.3.6'])]));
    assert.match(calls(), /^session ipvsadm: -a -t 10\.96\.0\.10:80 -r 10\.244\.3\.6:8080 -m -w 1$/m, 'a new session takes the next change');
    assert.doesNotMatch(calls(), /^ipvsadm --restore$/m);
  });

  test('a session that dies mid-batch is replaced, and the sync is done again in full', async () => {
    writeFileSync(join(dir, 'session.die'), '10.244.3.7');
    reset();
    await be.sync(snapshot([web(['10.244.1.5', '10.244.3.7'])]));
    assert.match(calls(), /^ipvsadm -Sn$/m);
    assert.match(calls(), /^ipvsadm --restore\n(?: {2}.*\n)* {2}-a -t 10\.96\.0\.10:80 -r 10\.244\.3\.7:8080 -m -w 1$/m);
    rmSync(join(dir, 'session.die'));
    reset();
    await be.sync(snapshot([web(['10.244.1.5', '10.244.3.7', '10.244.3.8'])]));
    assert.match(calls(), /^session ipvsadm: -a -t 10\.96\.0\.10:80 -r 10\.244\.3\.8:8080 -m -w 1$/m);
  });
});

test('a tool past the backend’s per-call bound fails the sync with a clear error instead of hanging it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ipvs-slow-'));
  try {
    // Every tool answers at once except ipvsadm, which hangs.
    writeFileSync(join(dir, 'fast'), '#!/bin/sh\nexit 0\n');
    writeFileSync(join(dir, 'ipvsadm'), '#!/bin/sh\nexec sleep 30\n');
    for (const f of ['fast', 'ipvsadm']) chmodSync(join(dir, f), 0o755);
    for (const t of TOOLS.filter((x) => x !== 'ipvsadm')) symlinkSync(join(dir, 'fast'), join(dir, t));
    const be = new IpvsBackend({ ...backendConfig(), scheduler: 'rr' }, { wrap: ['env', `PATH=${dir}:/usr/bin:/bin`], flavour: 'legacy', commandTimeoutMs: 300 });
    const started = Date.now();
    await assert.rejects(be.sync(snapshot([web(['10.244.1.5'])])), /ipvsadm did not finish within 0\.3 s/);
    assert.ok(Date.now() - started < 10_000, 'the bound, not the tool, ended the call');
    assert.equal(be.syncFailures, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
