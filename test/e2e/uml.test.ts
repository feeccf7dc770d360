// The User-Mode Linux test tooling (test/support/uml), proven in one boot: the iptables mode's
// real-kernel scenarios (legacy flavour, found by the proxy itself) and ipvsadm, neither of which
// this machine's own kernel could show (it has no IPVS). The file fails, never skips, without UML.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { before, describe, it } from 'node:test';
import { runInUml, umlMissing, type UmlRun } from '../support/uml/run.js';

const GUEST = fileURLToPath(new URL('./uml-guest.js', import.meta.url));
/**
 * What runs in the guest: the flavour check and one shared scenario that sends packets from an
 * external client, a pod and the node itself, to a NodePort, an external IP and a load-balancer
 * IP. Each test costs guest time (one CPU, process starts ~20 times slower than on the host).
 */
const SCENARIOS = ['^the guest kernel has no nf_tables', '^NodePort, external IP and load-balancer IP'];
const MARK = '=== ipvsadm';

// An IPVS virtual server in a namespace of the guest, as the IPVS mode will program it.
const IPVS_CHECK = [
  'ip netns add ipvs',
  'ip -n ipvs link add kube-ipvs0 type dummy',
  'ip -n ipvs addr add 10.96.0.10/32 dev kube-ipvs0',
  'ip netns exec ipvs ipvsadm -A -t 10.96.0.10:80 -s rr',
  'ip netns exec ipvs ipvsadm -a -t 10.96.0.10:80 -r 10.244.1.10:8080 -m',
  'ip netns exec ipvs ipvsadm -A -t 10.96.0.11:80 -s sh -p 10800',
  'ip netns exec ipvs ipvsadm -Ln',
].join(' && ');

describe('User-Mode Linux test kernel', () => {
  let run: UmlRun;
  let tests = '';
  let ipvs = '';

  before(async () => {
    const missing = umlMissing();
    if (missing) assert.fail(`${missing}${process.env.CI === 'true' ? ' (CI must install it)' : ''}`);
    const pattern = SCENARIOS.map((s) => `--test-name-pattern=${JSON.stringify(s)}`).join(' ');
    run = await runInUml({
      command: `node --test --test-reporter=tap ${pattern} ${GUEST}; s=$?; echo '${MARK}'; ${IPVS_CHECK} || exit 100; exit $s`,
      // Node starts ~20 times slower in the guest than on the host: on a loaded machine the
      // cluster alone (pods, API server, the proxy's first sync) took 95 s to come up.
      env: { KPT_E2E_WAIT_MS: '60000' },
      timeoutMs: 270_000,
    });
    [tests = '', ipvs = ''] = run.output.split(`${MARK}\n`);
  });

  it('runs the iptables-mode scenarios (legacy flavour, picked by the proxy) in the guest kernel', (t) => {
    t.diagnostic(`one UML run (boot, scenarios, ipvsadm, power-off): ${run.ms} ms`);
    const count = (what: string): number => Number(new RegExp(`^# ${what} (\\d+)$`, 'm').exec(tests)?.[1] ?? -1);
    assert.equal(count('fail'), 0, tests || run.console);
    // Every selected test ran and passed; the others of the shared suite were left out.
    assert.equal(count('pass'), SCENARIOS.length, tests || run.console);
    assert.notEqual(run.exitCode, null, `the guest did not finish:\n${run.output}\n${run.console}`);
  });

  it('ipvsadm -Ln lists virtual servers with their scheduler, persistence and masqueraded real servers', () => {
    assert.match(ipvs, /^TCP {2}10\.96\.0\.10:80 rr\s*$/m, `${ipvs}\n${run.console}`);
    assert.match(ipvs, /^ {2}-> 10\.244\.1\.10:8080 +Masq +1 /m, ipvs);
    assert.match(ipvs, /^TCP {2}10\.96\.0\.11:80 sh persistent 10800\s*$/m, ipvs);
    assert.equal(run.exitCode, 0, run.output);
  });
});
