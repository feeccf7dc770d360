// `kube-proxy-ts sandbox`: the example cluster on a real kernel, in network namespaces.
//
// Builds the topology of topology.ts with one pod per endpoint of the manifests, runs the proxy
// (nftables mode unless told, manifests source) inside the proxy node's namespace, shows every
// service answering from its pods, then keeps running until SIGINT/SIGTERM/SIGHUP and removes
// everything. Without root or without the mode's tools it runs the proxy with --dry-run.
import { spawn } from 'node:child_process';
import { accessSync, constants, copyFileSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MODES, type ModeDescriptor } from '../backend/modes.js';
import { LineSplitter } from '../lines.js';
import { HELP, parseSandboxArgs, type SandboxOptions } from './args.js';
import { claimSandbox, removeSandboxLeftovers, TEMP_PREFIX } from './leftovers.js';
import { loadManifests, planChecks, planPods, type Check, type PodPlan } from './plan.js';
import type { ProbeJob, ProbeResult } from './probe.js';
import { ENDING_SIGNALS, signalExitCode } from './processes.js';
import { formatCheck, formatSkip, judge, widths } from './report.js';
import { createTopology, type Topology } from './topology.js';

// The bundled command, as users run it (scripts/bundle.mjs).
const MAIN = fileURLToPath(new URL('../cli/kube-proxy-ts.js', import.meta.url));
const PROBE_MAIN = fileURLToPath(new URL('./probe-main.js', import.meta.url));
/** Holds every topology pod network (10.244.N.0/24). */
const CLUSTER_CIDR = '10.244.0.0/16';
/** Namespace names start with this and 4 hex digits. */
const SANDBOX_PREFIX = 'kps';
const REQUESTS = 30;
const NO_ANSWER_REQUESTS = 3;
const FIRST_SYNC_TIMEOUT_MS = 60_000;
const MANIFEST_EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

function out(line = ''): void {
  process.stdout.write(line + '\n');
}

function onPath(cmd: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    try {
      accessSync(join(dir, cmd), constants.X_OK);
      return true;
    } catch {
      // Not in this directory.
    }
  }
  return false;
}

/** Why the sandbox cannot create namespaces here, or undefined when it can. */
export function missingPrivileges(mode: ModeDescriptor = MODES.nftables): string | undefined {
  if (process.getuid && process.getuid() !== 0) return `not running as root (uid ${process.getuid()})`;
  const missing = ['ip', ...mode.sandbox.tools, 'sysctl'].filter((c) => !onPath(c));
  if (missing.length > 0) return `missing command${missing.length > 1 ? 's' : ''}: ${missing.join(', ')}`;
  return undefined;
}

function proxyArgs(opts: SandboxOptions, manifests = opts.manifests): string[] {
  return [MAIN, '--manifests', manifests, '--hostname-override', opts.node, '--proxy-mode', opts.mode.name, '--cluster-cidr', CLUSTER_CIDR];
}

/** Calls fn with each complete line of a stream. */
function eachLine(stream: NodeJS.ReadableStream, fn: (line: string) => void): void {
  const lines = new LineSplitter(fn);
  stream.on('data', (chunk: Buffer | string) => lines.push(chunk.toString()));
}

/** The proxy log lines worth showing while the sandbox idles: problems, changes and syncs. */
function worthForwarding(line: string): boolean {
  return /^[WE]\d/.test(line) || / (change received|synced proxy rules) /.test(line);
}

/** Resolves with the signal's name on the first SIGINT, SIGTERM or SIGHUP; the handlers stay until dispose. */
function signals(): { received: Promise<NodeJS.Signals>; dispose(): void } {
  let fire: (s: NodeJS.Signals) => void = () => {};
  const received = new Promise<NodeJS.Signals>((r) => (fire = r));
  const handler = (s: NodeJS.Signals): void => fire(s);
  for (const sig of ENDING_SIGNALS) process.on(sig, handler);
  return {
    received,
    dispose: () => {
      for (const sig of ENDING_SIGNALS) process.off(sig, handler);
    },
  };
}

/** Without namespaces: the proxy with --dry-run, its ruleset on stdout. */
async function dryRun(opts: SandboxOptions): Promise<number> {
  // No health or metrics servers: a dry run serves nothing, and their ports may be taken on this host.
  const args = [...proxyArgs(opts), '--dry-run', ...(opts.once ? [] : ['--watch'])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const sig = signals();
  child.stdout.pipe(process.stdout, { end: false });
  let firstSync: () => void = () => {};
  const synced = new Promise<void>((r) => (firstSync = r));
  let syncedOnce = false;
  eachLine(child.stderr, (line) => {
    const sync = / synced proxy rules /.test(line);
    // The initial list is one change line per object: show changes only once the first sync is out.
    if (sync || /^[WE]\d/.test(line) || (syncedOnce && worthForwarding(line))) process.stderr.write(line + '\n');
    if (sync) {
      syncedOnce = true;
      firstSync();
    }
  });
  const closed = new Promise<number | null>((r) => child.once('close', (code) => r(code)));
  child.once('error', (e) => process.stderr.write(`sandbox: cannot start the proxy: ${e.message}\n`));
  const stopChild = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGTERM');
    await closed;
  };
  try {
    const first = await Promise.race([synced.then(() => 'synced' as const), closed.then(() => 'exited' as const), sig.received]);
    if (first === 'exited') {
      process.stderr.write(`sandbox: the proxy exited (code ${child.exitCode}) before its first sync\n`);
      return 1;
    }
    if (first !== 'synced') {
      await stopChild();
      return signalExitCode(first);
    }
    if (opts.once) {
      await stopChild();
      return 0;
    }
    out();
    out(`Dry run: nothing is programmed. Edit the manifests in ${opts.manifests} and the proxy prints the`);
    out('transaction it would send. Press Ctrl-C to stop.');
    const end = await Promise.race([closed.then(() => 'exited' as const), sig.received]);
    if (end === 'exited') {
      process.stderr.write(`sandbox: the proxy exited unexpectedly (code ${child.exitCode})\n`);
      return 1;
    }
    await stopChild();
    return 0;
  } finally {
    sig.dispose();
  }
}

/** A private copy, so that edits while the sandbox runs never touch the originals. */
function copyManifests(dir: string): string {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    throw new Error(`cannot read manifests directory ${dir}: ${(err as Error).message}`);
  }
  // The owner's PID in the name tells `sandbox --cleanup` whether the copy is still in use.
  const tmp = mkdtempSync(join(tmpdir(), `${TEMP_PREFIX}${process.pid}-`));
  for (const name of names) {
    const src = join(dir, name);
    if (MANIFEST_EXTENSIONS.has(extname(name).toLowerCase()) && statSync(src).isFile()) copyFileSync(src, join(tmp, name));
  }
  return tmp;
}

async function runChecks(topo: Topology, checks: Check[]): Promise<ProbeResult[]> {
  const results: ProbeResult[] = new Array(checks.length);
  const bySource = new Map<string, number[]>();
  checks.forEach((c, i) => bySource.set(c.from, [...(bySource.get(c.from) ?? []), i]));
  await Promise.all(
    [...bySource].map(async ([from, indexes]) => {
      const jobs: ProbeJob[] = indexes.map((i) => {
        const c = checks[i]!;
        return {
          proto: c.proto,
          ip: c.ip,
          port: c.port,
          count: c.noAnswer !== undefined ? NO_ANSWER_REQUESTS : REQUESTS,
          // Affinity is recorded by the first packet: concurrent first requests could each pick a pod.
          concurrency: c.sticky ? 1 : 10,
          timeoutMs: c.noAnswer !== undefined ? 1000 : 1500,
        };
      });
      const worst = jobs.reduce((sum, j) => sum + Math.ceil(j.count / j.concurrency) * j.timeoutMs, 0);
      const res = await topo.exec(from, process.execPath, [PROBE_MAIN, '--json'], { input: JSON.stringify(jobs), timeoutMs: worst + 15_000 });
      const parsed = JSON.parse(res.stdout) as ProbeResult[];
      if (!Array.isArray(parsed) || parsed.length !== jobs.length) throw new Error(`probe in ${from}: unexpected output ${res.stdout.slice(0, 200)}`);
      indexes.forEach((ci, j) => (results[ci] = parsed[j]!));
    }),
  );
  return results;
}

function describeNamespaces(topo: Topology, plan: PodPlan): string[] {
  const lines: string[] = [];
  const w = Math.max(...topo.namespaces().map((n) => n.length));
  const nodeName = (index: number): string => plan.nodes.find((n) => n.index === index)?.name ?? `node ${index} (no Node object)`;
  for (const n of topo.nodes) {
    const proxy = n.index === plan.proxyNode.index ? '; runs the proxy' : '';
    lines.push(`  ${n.ns.padEnd(w)}  ${nodeName(n.index)}: ${n.ip}, pods ${n.podCidr}${proxy}`);
  }
  lines.push(`  ${topo.ext.ns.padEnd(w)}  external client ${topo.ext.ip} (routes through ${topo.node(1).ip})`);
  for (const p of topo.pods.values()) {
    const serves = [...p.tcp.map((x) => `${x}/tcp`), ...p.udp.map((x) => `${x}/udp`)].join(' ') || 'nothing (client)';
    lines.push(`  ${p.ns.padEnd(w)}  pod ${p.ip} on ${nodeName(p.node)}, serves ${serves}`);
  }
  return lines;
}

class Sandbox {
  private topo: Topology | undefined;
  private tmp: string | undefined;
  private unclaim: (() => void) | undefined;
  /** Set once the checks are done: a signal then ends a normal run instead of interrupting one. */
  private running = false;
  private readonly removeTmp = (): void => {
    if (this.tmp) rmSync(this.tmp, { recursive: true, force: true });
  };

  constructor(private readonly opts: SandboxOptions) {}

  async run(): Promise<number> {
    const sig = signals();
    let signalled: NodeJS.Signals | undefined;
    void sig.received.then((s) => (signalled = s));
    process.on('exit', this.removeTmp);
    try {
      // While running, main() itself turns the signal into a normal end.
      const interrupted = sig.received.then((s) => (this.running ? new Promise<number>(() => {}) : signalExitCode(s)));
      const code = await Promise.race([this.main(sig.received), interrupted]);
      await this.cleanup();
      return code;
    } catch (err) {
      // Ctrl-C reaches the children too, so setup steps fail as a consequence: not worth a message.
      if (!signalled) process.stderr.write(`sandbox: ${err instanceof Error ? err.message : String(err)}\n`);
      await this.cleanup();
      return signalled ? signalExitCode(signalled) : 1;
    } finally {
      sig.dispose();
      process.off('exit', this.removeTmp);
    }
  }

  private async cleanup(): Promise<void> {
    if (this.topo) {
      const names = this.topo.namespaces();
      out(`Removing the sandbox: stopping its processes and deleting ${names.length} namespaces (${this.topo.id}-*).`);
      await this.topo.destroy();
      this.topo = undefined;
    }
    this.unclaim?.();
    this.unclaim = undefined;
    this.removeTmp();
    this.tmp = undefined;
  }

  private async main(stop: Promise<NodeJS.Signals>): Promise<number> {
    const o = this.opts;
    this.tmp = copyManifests(o.manifests);
    const mode = o.mode;
    const { objects, snapshot } = await loadManifests(this.tmp, o.node);
    const plan = planPods(objects, o.node);
    for (const n of plan.notes) out(`note: ${n}`);
    out(`Creating ${plan.nodeCount} nodes, ${plan.pods.length - 1} pods and a client pod in network namespaces...`);
    this.topo = await createTopology({
      nodes: plan.nodeCount,
      pods: plan.pods,
      prefix: SANDBOX_PREFIX,
      handleSignals: false,
      claim: (id) => (this.unclaim = claimSandbox(id)),
    });
    const topo = this.topo;
    out(`Sandbox ${topo.id}:`);
    for (const l of describeNamespaces(topo, plan)) out(l);
    if (!topo.brNetfilter) {
      out('note: br_netfilter is not loaded, so a pod cannot reach a pod on its own node through a service');
      out('      (the reply is bridged past conntrack); Kubernetes nodes load it: modprobe br_netfilter');
    }
    const { checks, skips } = planChecks(objects, snapshot, plan, { extIp: topo.ext.ip, sameNodeReplies: topo.brNetfilter });

    const nodeNs = topo.node(plan.proxyNode.index).ns;
    out(`Starting the proxy in ${nodeNs} (${mode.name} mode, manifests ${this.tmp})...`);
    const proxy = topo.spawn(nodeNs, process.execPath, proxyArgs(o, this.tmp), { ownGroup: true });
    // A failed first sync is retried by the proxy, but here it means a broken ruleset: report it at once.
    const first = await proxy.waitFor(/ (synced proxy rules|sync failed) /, { stream: 'stderr', timeoutMs: FIRST_SYNC_TIMEOUT_MS });
    if (/ sync failed /.test(first)) throw new Error(`the proxy's first sync failed:\n${proxy.stderr().trim().split('\n').slice(-5).join('\n')}`);

    out();
    out(`Each address gets ${REQUESTS} requests (${NO_ANSWER_REQUESTS} where no answer is expected); every pod answers with its name.`);
    const results = await runChecks(topo, checks);
    const w = widths(checks, skips);
    let failed = 0;
    checks.forEach((c, i) => {
      const v = judge(c, results[i]!);
      if (!v.ok) failed++;
      out(formatCheck(c, results[i]!, v, w));
    });
    for (const s of skips) out(formatSkip(s, w));
    out(failed === 0 ? `All ${checks.length} checks passed.` : `${failed} of ${checks.length} checks FAILED.`);
    if (o.once) return failed === 0 ? 0 : 1;
    this.running = true;

    out();
    out('Poke around:');
    out(`  ip netns exec ${nodeNs} ${mode.sandbox.dumpRules.join(' ')}`);
    const sample = checks.find((c) => c.kind === 'clusterIP' && c.noAnswer === undefined);
    if (sample) out(`  ip netns exec ${topo.ns(sample.from)} ${process.execPath} ${PROBE_MAIN} ${sample.proto} ${sample.ip} ${sample.port} 10`);
    out(`  ip netns exec ${topo.ext.ns} ${process.execPath} ${PROBE_MAIN} tcp <address> <port> 10`);
    out(`  edit ${this.tmp}/*.yaml: the proxy follows the changes (pods exist only for the endpoints above)`);
    out('The proxy keeps running; its changes, syncs and warnings follow. Press Ctrl-C to stop and remove everything.');
    eachLine(proxy.child.stderr!, (line) => {
      if (worthForwarding(line)) process.stderr.write(`proxy: ${line}\n`);
    });
    const end = await Promise.race([stop.then(() => 'stopped' as const), proxy.exited]);
    if (end === 'stopped') return 0;
    // Ctrl-C in a terminal signals the whole process group: the proxy may exit before our own handler runs.
    const late = await Promise.race([stop.then(() => 'stopped' as const), new Promise<'exited'>((r) => setTimeout(() => r('exited'), 1000))]);
    if (late === 'stopped') return 0;
    process.stderr.write(`sandbox: the proxy exited unexpectedly (code ${end.code}, signal ${end.signal}); last log lines:\n${proxy.stderr().slice(-2000)}\n`);
    return 1;
  }
}

export async function runSandbox(argv: string[]): Promise<number> {
  let opts: SandboxOptions;
  try {
    opts = parseSandboxArgs(argv);
  } catch (err) {
    process.stderr.write(`kube-proxy-ts sandbox: ${(err as Error).message}\n`);
    return 1;
  }
  if (opts.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (opts.cleanup) {
    if (process.getuid && process.getuid() !== 0) {
      process.stderr.write('kube-proxy-ts sandbox: --cleanup needs root (it deletes network namespaces)\n');
      return 1;
    }
    const left = removeSandboxLeftovers(SANDBOX_PREFIX);
    out(
      left.namespaces.length + left.tempFiles.length === 0
        ? 'Nothing left by earlier sandboxes.'
        : `Removed ${left.namespaces.length} namespaces, ${left.processes} processes and ${left.tempFiles.length} temporary files left by earlier sandboxes.`,
    );
    return 0;
  }
  const missing = missingPrivileges(opts.mode);
  if (missing) {
    out(`${missing}: the sandbox needs root, ip and ${opts.mode.sandbox.tools.join(', ')} to create network namespaces.`);
    out(`Doing a dry run instead: the proxy reads ${opts.manifests} and prints the ${opts.mode.name} ruleset it would program.`);
    out();
    return dryRun(opts);
  }
  return new Sandbox(opts).run();
}
