// The IPVS mode with real packets, in one User-Mode Linux boot (this machine's kernel has no
// IPVS): shared scenarios (test/e2e/scenarios.ts), the IPVS-only ones (ipvsadm -Ln, graceful
// termination) and every scheduler, all from ipvs-guest.ts. Fails, never skips, without UML.
//
// CI runs every scenario, listed below so that a renamed one fails rather than silently drops
// out: 12 service scenarios, restart and stop/--cleanup, the 2 IPVS-only ones and the schedulers.
// A process start costs 0.3-0.6 s in the guest (partial syncs go through long-lived ipvsadm and
// ipset sessions, so a change starts none); the lane took 261 s at load average about 1.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { before, describe, it } from 'node:test';
import { runInUml, umlMissing, type UmlRun } from '../support/uml/run.js';

const GUEST = fileURLToPath(new URL('./ipvs-guest.js', import.meta.url));
const ALL = process.env.KPT_UML_ALL === '1';
const TESTS = [
  '^a ClusterIP serves TCP and UDP from every endpoint',
  '^externalTrafficPolicy Local',
  '^NodePort, external IP and load-balancer IP',
  '^loadBalancerSourceRanges',
  '^a Service without endpoints refuses',
  '^a removed endpoint gets no new connections',
  '^a deleted Service stops answering',
  '^ClientIP session affinity',
  '^a UDP flow to a removed endpoint moves',
  '^a pod reaching itself through its Service',
  '^Services for another proxy, headless and ExternalName',
  '^an IPv6 ClusterIP of a dual-stack Service',
  '^ipvsadm -Ln lists',
  '^graceful termination',
  '^every scheduler',
  '^a restarted proxy keeps serving',
  '^stopping the proxy keeps the rules',
];
/** All: the shared scenarios (12 service, 2 shutdown), the 2 IPVS-only ones and the scheduler test. */
const AT_LEAST = ALL ? 17 : TESTS.length;

describe('IPVS mode in a User-Mode Linux kernel', () => {
  let run: UmlRun;

  before(async () => {
    const missing = umlMissing();
    if (missing) assert.fail(`${missing}${process.env.CI === 'true' ? ' (CI must install it)' : ''}`);
    const pattern = ALL ? '' : TESTS.map((s) => `--test-name-pattern=${JSON.stringify(s)}`).join(' ');
    run = await runInUml({
      command: `node --test --test-reporter=tap ${pattern} ${GUEST}`,
      // A bound, not a pace: start-up and each sync take seconds in the guest, minutes on a loaded machine.
      env: { KPT_E2E_WAIT_MS: '120000' },
      // ~20 s per scenario in the guest, ~95 s to boot and start the cluster on a busy machine.
      timeoutMs: ALL ? 900_000 : 540_000,
    });
  });

  it('runs the shared scenarios and the IPVS-only ones in IPVS mode, every one passing', (t) => {
    t.diagnostic(`one UML run (boot, scenarios, power-off): ${run.ms} ms`);
    // Where the guest's time goes: each test's duration and the processes it started.
    for (const line of run.output.split('\n')) if (/^\s*(ok|not ok) \d+ - |duration_ms|# processes started/.test(line)) t.diagnostic(line.trim());
    const count = (what: string): number => Number(new RegExp(`^# ${what} (\\d+)$`, 'm').exec(run.output)?.[1] ?? -1);
    assert.equal(count('fail'), 0, run.output || run.console);
    // A name pattern reports the tests it leaves out as skipped: count the passes, not the tests.
    assert.ok(count('pass') >= AT_LEAST, `${count('pass')} tests passed, expected at least ${AT_LEAST}:\n${run.output}`);
    for (const none of ['todo', 'cancelled']) assert.equal(count(none), 0, `${none}:\n${run.output}`);
    if (ALL) assert.equal(count('skipped'), 0, run.output);
    assert.equal(run.exitCode, 0, `${run.output}\n${run.console}`);
  });
});
