// `kube-proxy-ts explain` on the example cluster: the command a user runs to see where a packet goes.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { COMMAND } from '../support/command.js';

const EXAMPLES = new URL('../../../examples', import.meta.url).pathname;
const run = promisify(execFile);

async function explain(...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [COMMAND, 'explain', '--manifests', EXAMPLES, '--hostname-override', 'node-1',
    '--cluster-cidr', '10.244.0.0/16', ...args]);
  return stdout;
}

test('pod to ClusterIP reaches every endpoint; only the hairpin case is masqueraded', async () => {
  const out = await explain('--from', '10.244.1.10', '--to', '10.96.0.10:80');
  assert.match(out, /verdict: ACCEPT/);
  assert.match(out, /endpoints \(3\):\n  10\.244\.1\.10:8080  \(masqueraded\)\n  10\.244\.1\.11:8080\n  10\.244\.2\.10:8080/);
});

test('external client to an eTP Local NodePort reaches only local endpoints with its own IP', async () => {
  const out = await explain('--from', '10.0.0.100', '--to', '10.0.0.1:30082');
  assert.match(out, /endpoints \(2\):\n  10\.244\.1\.10:8080\n  10\.244\.1\.11:8080\n/);
  assert.match(out, /masquerade: no/);
});

test('loadBalancerSourceRanges: a client inside is served and masqueraded, one outside is dropped', async () => {
  const inside = await explain('--from', '10.0.0.100', '--to', '192.0.2.10:80');
  assert.match(inside, /verdict: ACCEPT/);
  assert.match(inside, /masquerade: yes/);
  const outside = await explain('--from', '198.51.100.7', '--to', '192.0.2.10:80');
  assert.match(outside, /verdict: DROP/);
  assert.match(outside, /endpoints: none/);
});

test('a wrong port on a ClusterIP is rejected', async () => {
  const out = await explain('--from', '10.244.1.10', '--to', '10.96.0.10:81');
  assert.match(out, /verdict: REJECT/);
});

test('bad arguments exit 2 with usage', async () => {
  await assert.rejects(explain('--from', 'not-an-ip', '--to', '10.96.0.10:80'), (err: { code?: number; stderr?: string }) => {
    assert.equal(err.code, 2);
    assert.match(err.stderr ?? '', /--from 'not-an-ip' is not an IP address/);
    return true;
  });
});
