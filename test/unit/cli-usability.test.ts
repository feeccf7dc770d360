// What a newcomer meets first: --help naming the commands, typos answered with the nearest
// name, one-shot dry runs, every configuration mistake at once, errors naming their file,
// and logging that shows per-object detail only when asked for.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseCommandLine } from '../../src/cli/flags.js';
import { ConfigErrors } from '../../src/config/index.js';
import { loadKubeConfig } from '../../src/source/kubeclient.js';
import { throwsConfigError } from '../support/config-errors.js';
import { CONFIG_HEADER, tempFiles } from '../support/tempfiles.js';
import { COMMAND } from '../support/command.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const EXAMPLES = join(ROOT, 'examples');
const { write } = tempFiles('kpts-usability-');
const parse = (...argv: string[]) => parseCommandLine(argv, {});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs the CLI to its end (killed after timeoutMs, which fails the caller's exit-code check). */
function cli(args: string[], timeoutMs = 20_000): Promise<Run> {
  const started = Date.now();
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [COMMAND, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, KUBECONFIG: '' } });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    });
  });
}

const DRY = ['--manifests', EXAMPLES, '--hostname-override', 'node-1', '--proxy-mode', 'nftables', '--dry-run'];

describe('commands and help', () => {
  it('--help lists the commands, and each command has its own --help', async () => {
    const help = await cli(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Commands:$/m);
    assert.match(help.stdout, /^ {2}explain {3}\S/m);
    assert.match(help.stdout, /^ {2}sandbox {3}\S/m);
    for (const command of ['explain', 'sandbox']) {
      const own = await cli([command, '--help']);
      assert.equal(own.code, 0, own.stderr);
      assert.match(own.stdout, new RegExp(`Usage: kube-proxy-ts ${command}`));
    }
  });

  it('the README names the commands and how to run this checkout', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    for (const command of ['explain', 'sandbox']) assert.match(readme, new RegExp(`^kube-proxy-ts ${command} `, 'm'));
    assert.match(readme, /npx kube-proxy-ts/);
  });

  it('a mistyped command or flag gets the nearest name, and nothing runs', async () => {
    const typo = await cli(['explian']);
    assert.equal(typo.code, 1);
    assert.equal(typo.stderr, 'kube-proxy-ts: unknown command "explian"; did you mean "kube-proxy-ts explain"?\n');
    assert.equal(typo.stdout, '');
    const flag = await cli(['--dryrun']);
    assert.equal(flag.code, 1);
    assert.match(flag.stderr, /unknown flag: --dryrun; did you mean "--dry-run"\?/);
  });

  it('--watch without --dry-run is refused', () => {
    throwsConfigError(() => parse('--watch'), '--watch only works with --dry-run');
  });
});

describe('dry runs', { timeout: 60_000 }, () => {
  it('prints the ruleset and exits 0, with no per-object log lines at the default verbosity', async () => {
    const run = await cli(DRY);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^table ip kube-proxy \{/m);
    assert.match(run.stderr, / synced proxy rules /);
    assert.doesNotMatch(run.stderr, /change received/);
    assert.doesNotMatch(run.stderr, /healthz server|metrics server/i);
  });

  it('-v=4 shows each object received; --vmodule does it for one file only', async () => {
    const verbose = await cli([...DRY, '--v', '4']);
    assert.equal(verbose.code, 0, verbose.stderr);
    assert.match(verbose.stderr, /change received kind="Service" type="ADDED" object="default\/web"/);
    const perFile = await cli([...DRY, '--vmodule', 'prox?=4']);
    assert.equal(perFile.code, 0, perFile.stderr);
    assert.match(perFile.stderr, /change received kind="Service"/);
    const otherFile = await cli([...DRY, '--vmodule', 'runner=4']);
    assert.doesNotMatch(otherFile.stderr, /change received/);
  });

  it('--log-text-split-stream sends informational lines to stdout, keeping stderr for problems', async () => {
    const run = await cli([...DRY, '--log-text-split-stream']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^I\S+ synced proxy rules /m);
    assert.doesNotMatch(run.stderr, /^I/m);
  });

  it('rejects a malformed --vmodule with one line', async () => {
    const run = await cli([...DRY, '--vmodule', 'proxy']);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /invalid value "proxy" for flag --vmodule: "proxy" is not of the form pattern=N/);
  });
});

describe('explain picks its node', { timeout: 60_000 }, () => {
  it('without --hostname-override: the node whose pod CIDR holds the source, and says so', async () => {
    const run = await cli(['explain', '--manifests', EXAMPLES, '--from', '10.244.2.10', '--to', '10.96.0.10:80']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /^explain: tracing on node node-2, whose pod CIDR 10\.244\.2\.0\/24 holds 10\.244\.2\.10 /m);
    assert.match(run.stdout, /^packet: TCP 10\.244\.2\.10 -> 10\.96\.0\.10:80 \(from pod, /m);
  });

  it('--hostname-override names the node, as for the proxy and the sandbox', async () => {
    const run = await cli(['explain', '--manifests', EXAMPLES, '--from', '10.244.1.10', '--to', '10.96.0.10:80', '--hostname-override', 'node-1']);
    assert.equal(run.code, 0, run.stderr);
    assert.doesNotMatch(run.stderr, /tracing on node/);
    assert.match(run.stdout, /\(from pod, /);
    const sandbox = await cli(['sandbox', '--help']);
    assert.match(sandbox.stdout, /--hostname-override NAME/);
    const old = await cli(['sandbox', '--node', 'node-1']);
    assert.equal(old.code, 1);
    assert.match(old.stderr, /--node is now --hostname-override/);
  });
});

describe('configuration errors', () => {
  it('a config file with several mistakes reports every one, each with its field path', () => {
    const path = write(`${CONFIG_HEADER}mode: nftabels\noomScoreAdj: 5000\nconntrack:\n  min: -1\nnodePortAddresses: [nope]\n`);
    const e = throwsConfigError(() => parse('--config', path), path, 'mode', 'oomScoreAdj', 'conntrack.min', 'nodePortAddresses[0]');
    assert.ok(e instanceof ConfigErrors);
    assert.equal(e.problems.length, 4);
  });

  it('shape mistakes (unknown fields, wrong types) are all reported too', () => {
    const path = write(`${CONFIG_HEADER}modee: nftables\nbindAddressHardFail: "yes"\niptables:\n  syncPeriod: fast\n`);
    throwsConfigError(() => parse('--config', path), '3 problems', 'unknown field "modee"', 'bindAddressHardFail', 'iptables.syncPeriod');
  });

  it('refuses an unknown feature gate, from a flag or from the file, and accepts known ones', () => {
    throwsConfigError(() => parse('--feature-gates', 'NoSuchGate=true'), '--feature-gates', 'unrecognized feature gate', 'NoSuchGate');
    const path = write(`${CONFIG_HEADER}featureGates:\n  NoSuchGate: true\n`);
    throwsConfigError(() => parse('--config', path), path, 'featureGates.NoSuchGate');
    assert.deepEqual(parse('--feature-gates', 'TopologyAwareHints=true').config.featureGates, { TopologyAwareHints: true });
  });

  it('a malformed kubeconfig names the file; one without contexts says so', () => {
    const bad = write('apiVersion: v1\nkind: Config\nclusters: [\n');
    assert.throws(() => loadKubeConfig({ kubeconfig: bad }), (e: Error) => e.message.startsWith(`kubeconfig ${bad}: `));
    const noContext = write('apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: "https://10.0.0.1"}\n');
    assert.throws(() => loadKubeConfig({ kubeconfig: noContext }), (e: Error) => {
      assert.equal(e.message, `kubeconfig ${noContext}: has no current-context (set one with kubectl config use-context, or add a context)`);
      return true;
    });
  });
});
