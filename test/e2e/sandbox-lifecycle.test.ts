// The sandbox's life beyond Ctrl-C: a terminal's Ctrl-C (SIGINT to the whole process group)
// stops the proxy in order, a closed terminal (SIGHUP) cleans up like Ctrl-C, a killed
// sandbox's processes die with it, `sandbox --cleanup` removes what it left without touching a
// sandbox still running, and the sandbox runs the iptables mode too.
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { after, describe, it } from 'node:test';
import { listNamespaces } from '../support/topology.js';
import { pidAlive } from '../support/process.js';
import { COMMAND } from '../support/command.js';

class Sandbox {
  stdout = '';
  stderr = '';
  readonly proc: ChildProcess;
  readonly closed: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  /** `ownGroup`: in a process group of its own, as a terminal starts a command, so the group can be signalled. */
  constructor(args: string[], ownGroup = false) {
    this.proc = spawn(process.execPath, [COMMAND, 'sandbox', ...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: ownGroup });
    this.proc.stdout!.setEncoding('utf8').on('data', (d: string) => (this.stdout += d));
    this.proc.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    this.closed = new Promise((r) => this.proc.once('close', (code, signal) => r({ code, signal })));
  }

  async up(): Promise<{ id: string; manifests: string; pids: number[] }> {
    const deadline = Date.now() + 120_000;
    while (!/Press Ctrl-C to stop/.test(this.stdout)) {
      if (this.proc.exitCode !== null) assert.fail(`sandbox exited (${this.proc.exitCode}):\n${this.stdout}\n${this.stderr}`);
      if (Date.now() > deadline) assert.fail(`sandbox not up:\n${this.stdout}\n${this.stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const id = /^Sandbox (kps[0-9a-f]{4}):$/m.exec(this.stdout)![1]!;
    const manifests = /manifests (\/\S+)\)\.\.\.$/m.exec(this.stdout)![1]!;
    const pids = listNamespaces(`${id}-`).flatMap((ns) =>
      execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split('\n').filter((p) => /^\d+$/.test(p)).map(Number),
    );
    return { id, manifests, pids };
  }

  /** Leaves nothing behind even when an assertion failed midway. */
  async kill(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null && this.proc.pid !== undefined) {
      process.kill(this.proc.pid, 'SIGTERM');
      await this.closed;
    }
    const m = /^Sandbox (kps[0-9a-f]{4}):$/m.exec(this.stdout);
    for (const ns of m ? listNamespaces(`${m[1]}-`) : []) {
      for (const pid of execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split('\n').filter((p) => /^\d+$/.test(p))) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // Gone meanwhile.
        }
      }
      execFileSync('ip', ['netns', 'del', ns]);
    }
  }
}

async function gone(pids: number[], ms = 5000): Promise<number[]> {
  const deadline = Date.now() + ms;
  while (pids.some(pidAlive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  return pids.filter(pidAlive);
}

describe('sandbox lifecycle', { timeout: 300_000 }, () => {
  const started: Sandbox[] = [];
  after(async () => {
    for (const s of started) await s.kill();
  });

  it('a killed sandbox takes its processes with it; --cleanup removes the rest and spares a running sandbox', async () => {
    const running = new Sandbox([]);
    const killed = new Sandbox([]);
    started.push(running, killed);
    const [keep, dead] = await Promise.all([running.up(), killed.up()]);
    assert.ok(dead.pids.length >= 5, `the killed sandbox ran processes: ${dead.pids.join(' ')}`);

    process.kill(killed.proc.pid!, 'SIGKILL');
    await killed.closed;
    assert.deepEqual(await gone(dead.pids), [], 'no process outlives a sandbox killed with SIGKILL');
    assert.ok(listNamespaces(`${dead.id}-`).length > 0, 'SIGKILL leaves the namespaces (nothing can run at SIGKILL)');
    assert.ok(existsSync(dead.manifests));

    const cleanup = spawn(process.execPath, [COMMAND, 'sandbox', '--cleanup'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    cleanup.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    const code = await new Promise((r) => cleanup.once('close', r));
    assert.equal(code, 0, out);
    assert.match(out, /^Removed \d+ namespaces, \d+ processes and \d+ temporary files left by earlier sandboxes\.$/m);
    assert.deepEqual(listNamespaces(`${dead.id}-`), []);
    assert.equal(existsSync(dead.manifests), false, 'its manifests copy is removed');
    assert.deepEqual(readdirSync(tmpdir()).filter((n) => n.includes(dead.id)), [], 'its owner file is removed');

    assert.ok(listNamespaces(`${keep.id}-`).length > 0, 'the running sandbox keeps its namespaces');
    assert.ok(keep.pids.every(pidAlive), 'and its processes');
    assert.ok(existsSync(keep.manifests), 'and its files');
  });

  it("Ctrl-C at a terminal (SIGINT to the whole group) stops the proxy before its tools: no warning, nothing left", async () => {
    const sb = new Sandbox([], true);
    started.push(sb);
    const { id, pids } = await sb.up();
    process.kill(-sb.proc.pid!, 'SIGINT');
    const { code } = await sb.closed;
    assert.equal(code, 0, sb.stderr);
    const output = `${sb.stdout}\n${sb.stderr}`;
    assert.doesNotMatch(output, /stopping a backend failed|event listener exited|nft -i exited/, output);
    assert.deepEqual(listNamespaces(`${id}-`), []);
    assert.deepEqual(await gone(pids), []);
  });

  it('SIGHUP (a closed terminal) removes everything, as Ctrl-C does', async () => {
    const sb = started[0]!;
    const { id, manifests, pids } = await sb.up();
    process.kill(sb.proc.pid!, 'SIGHUP');
    const { code } = await sb.closed;
    assert.equal(code, 0, sb.stderr);
    assert.deepEqual(listNamespaces(`${id}-`), []);
    assert.deepEqual(await gone(pids), []);
    assert.equal(existsSync(manifests), false);
    assert.deepEqual(readdirSync(tmpdir()).filter((n) => n.includes(id)), []);
  });

  it('--proxy-mode iptables: every example check passes through iptables rules', async () => {
    const sb = new Sandbox(['--once', '--proxy-mode', 'iptables']);
    started.push(sb);
    const { code } = await sb.closed;
    assert.equal(code, 0, `${sb.stdout}\n${sb.stderr}`);
    assert.match(sb.stdout, /\(iptables mode, manifests /);
    assert.match(sb.stdout, /^All \d+ checks passed\.$/m);
  });
});
