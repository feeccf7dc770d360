// The IPVS mode with real packets, in one User-Mode Linux boot (this machine's kernel has no
// IPVS): a chosen set of the shared scenarios, the IPVS-only ones (ipvsadm -Ln, graceful
// termination) and every scheduler, all from ipvs-guest.ts. Fails, never skips, without UML.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { before, describe, it } from 'node:test';
import { runInUml, umlMissing, type UmlRun } from '../support/uml/run.js';

const GUEST = fileURLToPath(new URL('./ipvs-guest.js', import.meta.url));
/** Each test costs guest time (process starts are ~20 times slower there): the ones that show IPVS at work. */
const TESTS = [
  '^a ClusterIP serves TCP and UDP from every endpoint',
  '^NodePort, external IP and load-balancer IP',
  '^ipvsadm -Ln lists',
  '^graceful termination',
  '^every scheduler',
];

describe('IPVS mode in a User-Mode Linux kernel', () => {
  let run: UmlRun;

  before(async () => {
    const missing = umlMissing();
    if (missing) assert.fail(`${missing}${process.env.CI === 'true' ? ' (CI must install it)' : ''}`);
    const pattern = TESTS.map((s) => `--test-name-pattern=${JSON.stringify(s)}`).join(' ');
    run = await runInUml({
      command: `node --test --test-reporter=tap ${pattern} ${GUEST}`,
      env: { KPT_E2E_WAIT_MS: '60000' },
      // ~20 s per scenario in the guest, ~95 s to boot and start the cluster on a busy machine.
      timeoutMs: 540_000,
    });
  });

  it('runs the selected scenarios in IPVS mode, every one passing', (t) => {
    t.diagnostic(`one UML run (boot, scenarios, power-off): ${run.ms} ms`);
    const count = (what: string): number => Number(new RegExp(`^# ${what} (\\d+)$`, 'm').exec(run.output)?.[1] ?? -1);
    assert.equal(count('fail'), 0, run.output || run.console);
    assert.equal(count('pass'), TESTS.length, run.output || run.console);
    assert.equal(run.exitCode, 0, `${run.output}\n${run.console}`);
  });
});
