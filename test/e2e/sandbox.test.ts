// The README's run command: `kube-proxy-ts sandbox` builds the example cluster in network
// namespaces, shows every example service answering from the right pods, and leaves nothing behind.
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse, parseAllDocuments } from 'yaml';
import { listNamespaces } from '../support/topology.js';
import { pidAlive } from '../support/process.js';
import { COMMAND } from '../support/command.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const EXAMPLES = join(ROOT, 'examples');
const PROXY_NODE = 'node-1';
// Same-node pod → service → pod replies only pass conntrack with br_netfilter (see topology.ts).
const BR_NETFILTER = existsSync('/proc/sys/net/bridge/bridge-nf-call-iptables');

interface Ep {
  pod: string;
  node: string;
  ready: boolean;
}

interface Svc {
  name: string;
  type: string;
  clusterIP?: string;
  externalTrafficPolicy?: string;
  sessionAffinity?: string;
  loadBalancerSourceRanges?: string[];
}

/** The example services and, per service, its endpoints' pods, read straight from the YAML. */
function examples(): { services: Svc[]; endpoints: Map<string, Ep[]> } {
  const services = parseAllDocuments(readFileSync(join(EXAMPLES, 'services.yaml'), 'utf8')).map((d) => {
    const o = d.toJS() as { metadata: { name: string }; spec: Omit<Svc, 'name'> };
    return { name: o.metadata.name, ...o.spec };
  });
  const list = parse(readFileSync(join(EXAMPLES, 'endpointslices.yaml'), 'utf8')) as {
    items: Array<{
      metadata: { labels: Record<string, string> };
      endpoints: Array<{ nodeName: string; conditions: { ready: boolean }; targetRef: { name: string } }>;
    }>;
  };
  const endpoints = new Map<string, Ep[]>();
  for (const s of list.items) {
    const svc = s.metadata.labels['kubernetes.io/service-name']!;
    const eps = s.endpoints.map((e) => ({ pod: e.targetRef.name, node: e.nodeName, ready: e.conditions.ready }));
    endpoints.set(svc, [...(endpoints.get(svc) ?? []), ...eps]);
  }
  return { services, endpoints };
}

interface Line {
  ok: boolean;
  service: string;
  kind: string;
  target: string;
  from: string;
  answered: number;
  sent: number;
  pods: string[];
  text: string;
}

const LINE = /^(ok  |FAIL) (\S+)\s+(\S+)\s+(\S+)\s+from (\S+) \(\S+\)\s+(\d+)\/(\d+) answered(?:: (.*?))?(?:;.*|  \(.*)?$/;

function checkLines(stdout: string): Line[] {
  const lines: Line[] = [];
  for (const text of stdout.split('\n')) {
    const m = LINE.exec(text);
    if (!m) continue;
    const pods = (m[8] ?? '').split(', ').filter((p) => p !== '').map((p) => p.split(' ')[0]!);
    lines.push({ ok: m[1] === 'ok  ', service: m[2]!, kind: m[3]!, target: m[4]!, from: m[5]!, answered: Number(m[6]), sent: Number(m[7]), pods: pods.sort(), text });
  }
  return lines;
}

function sandboxId(stdout: string): string {
  const m = /^Sandbox (kps[0-9a-f]{4}):$/m.exec(stdout);
  assert.ok(m, `the sandbox names its namespaces; output:\n${stdout}`);
  return m[1]!;
}

/** PIDs of processes whose command line mentions marker (the sandbox's private manifests copy). */
function processesMentioning(marker: string): number[] {
  const out = execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' });
  return out
    .split('\n')
    .filter((l) => l.includes(marker))
    .map((l) => Number(l.trim().split(' ')[0]));
}

class Sandbox {
  stdout = '';
  stderr = '';
  readonly proc: ChildProcess;
  readonly closed: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(args: string[]) {
    this.proc = spawn(process.execPath, [COMMAND, 'sandbox', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.setEncoding('utf8').on('data', (d: string) => (this.stdout += d));
    this.proc.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    this.closed = new Promise((r) => this.proc.once('close', (code, signal) => r({ code, signal })));
  }

  async until(what: string, re: RegExp, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!re.test(this.stdout)) {
      if (this.proc.exitCode !== null) assert.fail(`sandbox exited (${this.proc.exitCode}) before ${what}:\n${this.stdout}\n${this.stderr}`);
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}:\n${this.stdout}\n${this.stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Leaves nothing behind even when an assertion failed midway. */
  async kill(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null && this.proc.pid !== undefined) {
      process.kill(this.proc.pid, 'SIGTERM');
      await this.closed;
    }
    const m = /^Sandbox (kps[0-9a-f]{4}):$/m.exec(this.stdout);
    const left = m ? listNamespaces(`${m[1]}-`) : [];
    if (left.length > 0) execFileSync('ip', ['-force', '-batch', '-'], { input: left.map((n) => `netns del ${n}\n`).join('') });
  }
}

describe('sandbox (the README run command)', { timeout: 240_000 }, () => {
  const started: Sandbox[] = [];
  after(async () => {
    for (const s of started) await s.kill();
  });

  it('--once shows every example service answered by its pods, then removes its namespaces', async () => {
    const sb = new Sandbox(['--once']);
    started.push(sb);
    const { code } = await sb.closed;
    const out = sb.stdout;
    const id = sandboxId(out);
    assert.deepEqual(listNamespaces(`${id}-`), [], 'no namespace of the sandbox remains');

    const lines = checkLines(out);
    const { services, endpoints } = examples();
    const failures = lines.filter((l) => !l.ok).map((l) => l.text);
    assert.deepEqual(failures, [], `every check passed; output:\n${out}\n${sb.stderr}`);
    assert.equal(code, 0, `exit status 0 when every check passes; stderr:\n${sb.stderr}`);
    assert.match(out, new RegExp(`^All ${lines.length} checks passed\\.$`, 'm'));

    const find = (svc: string, kind: string, from?: string): Line[] =>
      lines.filter((l) => l.service === `default/${svc}` && l.kind === kind && (from === undefined || (from === 'ext') === (l.from === 'ext')));
    const sorted = (xs: string[]): string[] => [...new Set(xs)].sort();
    for (const svc of services) {
      const line = (kind: string, from?: string): Line => {
        const found = find(svc.name, kind, from);
        assert.equal(found.length, 1, `one ${kind} line for ${svc.name}${from ? ` from ${from}` : ''}:\n${out}`);
        return found[0]!;
      };
      if (svc.type === 'ExternalName') {
        assert.match(out, new RegExp(`^--\\s+default/${svc.name}\\s+no rules \\(ExternalName`, 'm'));
        continue;
      }
      if (svc.clusterIP === 'None') {
        assert.match(out, new RegExp(`^--\\s+default/${svc.name}\\s+no rules \\(headless\\)`, 'm'));
        continue;
      }
      const ready = (endpoints.get(svc.name) ?? []).filter((e) => e.ready);
      const all = sorted(ready.map((e) => e.pod));
      const local = sorted(ready.filter((e) => e.node === PROXY_NODE).map((e) => e.pod));
      const remote = sorted(ready.filter((e) => e.node !== PROXY_NODE).map((e) => e.pod));
      assert.ok(all.length > 0, `${svc.name} has ready endpoints`);

      // ClusterIP, from a pod on the proxy's node: the ready endpoints, never the terminating one.
      const cip = line('clusterIP');
      assert.equal(cip.target.split(':')[0], svc.clusterIP);
      assert.notEqual(cip.from, 'ext');
      if (svc.sessionAffinity === 'ClientIP') {
        assert.ok(cip.pods.length <= 1 && cip.pods.every((p) => all.includes(p)), `${svc.name}: one sticky pod: ${cip.text}`);
        if (BR_NETFILTER) assert.equal(cip.pods.length, 1, cip.text);
      } else if (BR_NETFILTER) {
        assert.deepEqual(cip.pods, all, cip.text);
        assert.equal(cip.answered, cip.sent, cip.text);
      } else {
        assert.ok(remote.every((p) => cip.pods.includes(p)) && cip.pods.every((p) => all.includes(p)), cip.text);
      }

      // From the external client: node ports, external IPs, load-balancer IPs; eTP Local keeps it on this node.
      const external = svc.externalTrafficPolicy === 'Local' ? local : all;
      const externalKinds = lines.filter((l) => l.service === `default/${svc.name}` && l.from === 'ext').map((l) => l.kind);
      if (svc.type === 'NodePort' || svc.type === 'LoadBalancer') assert.ok(externalKinds.includes('nodePort'), `${svc.name} has a nodePort check`);
      if (svc.type === 'LoadBalancer') assert.ok(externalKinds.includes('loadBalancer'), `${svc.name} has a loadBalancer check`);
      for (const l of lines.filter((x) => x.service === `default/${svc.name}` && x.from === 'ext')) {
        assert.deepEqual(l.pods, external, l.text);
        assert.equal(l.answered, l.sent, l.text);
      }
      // Source ranges keep pods out of the load balancer.
      if (svc.loadBalancerSourceRanges?.length) {
        const fromPod = line('loadBalancer', 'client');
        assert.equal(fromPod.answered, 0, fromPod.text);
      }
    }
    assert.match(out, /^Removing the sandbox/m);
  });

  it('keeps running until SIGINT, then stops its processes and deletes its namespaces', async () => {
    const sb = new Sandbox([]);
    started.push(sb);
    await sb.until('the sandbox to be up', /Press Ctrl-C to stop/, 120_000);
    const id = sandboxId(sb.stdout);
    const manifests = /manifests (\/\S+)\)\.\.\.$/m.exec(sb.stdout)?.[1];
    assert.ok(manifests, 'the sandbox says where its manifests copy is');
    assert.ok(listNamespaces(`${id}-`).length > 0, 'namespaces exist while it runs');
    assert.match(sb.stdout, new RegExp(`ip netns exec ${id}-node1 nft list table ip kube-proxy`));
    const proxies = processesMentioning(manifests);
    assert.ok(proxies.length > 0, 'the proxy runs');

    process.kill(sb.proc.pid!, 'SIGINT');
    const { code } = await sb.closed;
    assert.equal(code, 0, sb.stderr);
    assert.deepEqual(listNamespaces(`${id}-`), []);
    assert.deepEqual(proxies.filter(pidAlive), [], 'the proxy is gone');
    assert.equal(existsSync(manifests), false, 'the manifests copy is removed');
  });
});
