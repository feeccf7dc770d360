// --dry-run needs no privileges: the proxy (and the sandbox without root) run as an unprivileged
// user, print the nftables ruleset for the example cluster, and print a transaction per later edit.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments, stringify } from 'yaml';
import { COMMAND } from '../support/command.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const EXAMPLES = join(ROOT, 'examples');

interface ServiceDoc {
  metadata: { name: string };
  spec: { clusterIP?: string; clusterIPs?: string[] };
}

function exampleServices(dir = EXAMPLES): ServiceDoc[] {
  return parseAllDocuments(readFileSync(join(dir, 'services.yaml'), 'utf8')).map((d) => d.toJS() as ServiceDoc);
}

function clusterIPs(): string[] {
  const ips = exampleServices()
    .map((s) => s.spec.clusterIP)
    .filter((ip): ip is string => ip !== undefined && ip !== 'None');
  assert.ok(ips.length >= 5, 'the examples have cluster IPs to look for');
  return ips;
}

function onPath(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

/** The command line that runs node with args as an unprivileged user, and that user's uid. */
function unprivileged(args: string[]): { cmd: string; args: string[]; uid: number } {
  const uid = process.getuid!();
  if (uid !== 0) return { cmd: process.execPath, args, uid };
  if (onPath('setpriv')) return { cmd: 'setpriv', args: ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, ...args], uid: 65534 };
  const nobody = Number(spawnSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).stdout.trim());
  return { cmd: 'runuser', args: ['-u', 'nobody', '--', process.execPath, ...args], uid: nobody };
}

/** Real uids of the running node processes of main.js whose command line contains marker. */
function uidsOfProcessesWith(marker: string): number[] {
  const uids: number[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (cmdline[0] !== process.execPath || cmdline[1] !== COMMAND || !cmdline.some((a) => a.includes(marker))) continue;
      const uidLine = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('Uid:'));
      uids.push(Number(uidLine?.split(/\s+/)[1]));
    } catch {
      // The process went away while being read.
    }
  }
  return uids;
}

class Child {
  stdout = '';
  stderr = '';
  readonly proc: ChildProcess;
  readonly closed: Promise<number | null>;

  constructor(cmd: string, args: string[]) {
    this.proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.setEncoding('utf8').on('data', (d: string) => (this.stdout += d));
    this.proc.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    this.closed = new Promise((r) => this.proc.once('close', (code) => r(code)));
  }

  async until(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
      if (this.proc.exitCode !== null) assert.fail(`exited (${this.proc.exitCode}) before ${what}; stderr: ${this.stderr.slice(-2000)}`);
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}; stderr: ${this.stderr.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  syncs(): number {
    return this.stderr.split('\n').filter((l) => / synced proxy rules /.test(l)).length;
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null && this.proc.pid !== undefined) process.kill(this.proc.pid, 'SIGTERM');
    await this.closed;
  }
}

describe('proxy --dry-run without privileges', { timeout: 60_000 }, () => {
  let dir: string;
  let child: Child;
  let runAs: number;

  before(async () => {
    // A private copy the test can edit; readable by the unprivileged user.
    dir = mkdtempSync(join(tmpdir(), 'kpt-dryrun-'));
    cpSync(EXAMPLES, dir, { recursive: true });
    chmodSync(dir, 0o755);
    // No health or metrics servers: their default ports may be in use by other tests on this host.
    const cmd = unprivileged([COMMAND, '--dry-run', '--watch', '--manifests', dir, '--proxy-mode', 'nftables', '--hostname-override', 'node-1', '--healthz-bind-address=', '--metrics-bind-address=']);
    runAs = cmd.uid;
    child = new Child(cmd.cmd, cmd.args);
    await child.until('the first sync', () => child.syncs() >= 1);
  });

  after(async () => {
    await child?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs as an unprivileged user', () => {
    assert.notEqual(runAs, 0);
    assert.deepEqual(uidsOfProcessesWith(dir), [runAs]);
  });

  it('prints the ruleset with the table and every example ClusterIP', () => {
    assert.match(child.stdout, /^table ip kube-proxy \{/m);
    for (const ip of clusterIPs()) assert.ok(child.stdout.includes(ip), `ruleset mentions ${ip}`);
    assert.doesNotMatch(child.stderr, /^E/m, 'no errors logged');
  });

  it('prints a later transaction when a manifest changes', async () => {
    const before = child.stdout.length;
    const oldIP = '10.96.0.10';
    const newIP = '10.96.0.200';
    assert.ok(!child.stdout.includes(newIP), `${newIP} is not in the first ruleset`);
    const docs = exampleServices(dir);
    const web = docs.find((d) => d.metadata.name === 'web');
    assert.ok(web);
    assert.equal(web.spec.clusterIP, oldIP);
    web.spec.clusterIP = newIP;
    web.spec.clusterIPs = [newIP];
    writeFileSync(join(dir, 'services.yaml'), docs.map((d) => stringify(d)).join('---\n'));

    await child.until('a second sync', () => child.syncs() >= 2);
    const later = child.stdout.slice(before);
    // The tuple moves within its shape's set (cluster-<N>-tuples).
    assert.match(later, new RegExp(`add element ip kube-proxy cluster-\\d+-tuples \\{[^}]*${newIP.replaceAll('.', '\\.')} \\. tcp \\. 80\\b`));
    assert.match(later, new RegExp(`delete element ip kube-proxy cluster-\\d+-tuples \\{[^}]*${oldIP.replaceAll('.', '\\.')} \\. tcp \\. 80\\b`));
    assert.doesNotMatch(later, /^table ip kube-proxy/m, 'an edit prints a transaction, not the whole ruleset again');
  });
});

describe('sandbox without root', { timeout: 60_000 }, () => {
  it('says so, prints the dry-run ruleset and exits 0 after the first sync with --once', async () => {
    const cmd = unprivileged([COMMAND, 'sandbox', '--once']);
    const child = new Child(cmd.cmd, cmd.args);
    const code = await child.closed;
    assert.equal(code, 0, child.stderr);
    assert.match(child.stdout, /^not running as root \(uid \d+\): the sandbox needs root/m);
    assert.match(child.stdout, /Doing a dry run instead/);
    assert.match(child.stdout, /^table ip kube-proxy \{/m);
    for (const ip of clusterIPs()) assert.ok(child.stdout.includes(ip), `ruleset mentions ${ip}`);
    assert.equal(child.syncs(), 1);
  });

  it('rejects an unknown argument with a clear error and no action', async () => {
    const child = new Child(process.execPath, [COMMAND, 'sandbox', '--bogus']);
    assert.equal(await child.closed, 1);
    assert.match(child.stderr, /unknown argument "--bogus"/);
    assert.equal(child.stdout, '');
  });

  it('explains itself with --help', async () => {
    const child = new Child(process.execPath, [COMMAND, 'sandbox', '--help']);
    assert.equal(await child.closed, 0);
    assert.match(child.stdout, /^Usage: kube-proxy-ts sandbox/);
    assert.match(child.stdout, /--once/);
  });
});
