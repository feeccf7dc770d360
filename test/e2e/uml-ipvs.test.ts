// The IPVS mode with real packets, in one User-Mode Linux boot (this machine's kernel has no
// IPVS): every shared scenario (test/e2e/scenarios.ts), the IPVS-only ones (ipvsadm -Ln, graceful
// termination) and every scheduler, all from ipvs-guest.ts. Fails, never skips, without UML.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { before, describe, it } from 'node:test';
import { runInUml, umlMissing, type UmlRun } from '../support/uml/run.js';

const GUEST = fileURLToPath(new URL('./ipvs-guest.js', import.meta.url));
/** The shared scenarios (12 service, 2 shutdown), the 2 IPVS-only ones and the scheduler test. */
const AT_LEAST = 17;

describe('IPVS mode in a User-Mode Linux kernel', () => {
  let run: UmlRun;

  before(async () => {
    const missing = umlMissing();
    if (missing) assert.fail(`${missing}${process.env.CI === 'true' ? ' (CI must install it)' : ''}`);
    run = await runInUml({
      command: `node --test --test-reporter=tap ${GUEST}`,
      env: { KPT_E2E_WAIT_MS: '60000' },
      // ~20 s per scenario in the guest, ~95 s to boot and start the cluster on a busy machine.
      timeoutMs: 540_000,
    });
  });

  it('runs every shared scenario and the IPVS-only ones in IPVS mode, every one passing', (t) => {
    t.diagnostic(`one UML run (boot, scenarios, power-off): ${run.ms} ms`);
    // Where the guest's time goes: each test's duration and the processes it started.
    for (const line of run.output.split('\n')) if (/^\s*(ok|not ok) \d+ - |duration_ms|# processes started/.test(line)) t.diagnostic(line.trim());
    const count = (what: string): number => Number(new RegExp(`^# ${what} (\\d+)$`, 'm').exec(run.output)?.[1] ?? -1);
    assert.equal(count('fail'), 0, run.output || run.console);
    assert.ok(count('tests') >= AT_LEAST, `${count('tests')} tests ran, expected at least ${AT_LEAST}:\n${run.output}`);
    for (const none of ['skipped', 'todo', 'cancelled']) assert.equal(count(none), 0, `${none}:\n${run.output}`);
    assert.equal(count('pass'), count('tests'), run.output || run.console);
    assert.equal(run.exitCode, 0, `${run.output}\n${run.console}`);
  });
});
