/*
 * A small cluster for real-kernel e2e tests of the proxy: the namespace topology of topology.ts,
 * the fake API server running on node1's loopback (fake-apiserver-main.js, driven over stdin), and
 * the proxy (the bundled command, dist/src/cli/kube-proxy-ts.js) running inside node1's namespace with a kubeconfig pointing at it,
 * in the nftables mode or the iptables mode (on a node whose kubelet uses the nft or legacy flavour).
 *
 * Kubernetes node names are `node-<N>` for topology node N; node-1 is the proxy's own node, with
 * InternalIPs 10.0.0.1 and fd00:10::1 (so the proxy programs both the ip and ip6 tables) and a
 * default route via node2.
 *
 * The harness knows a change is in the kernel from what the proxy logs after each sync (proxy-sync-log.ts).
 */
import { rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { EndpointSlice, KubeObject, Node, ObjectKind, Service } from '../../src/model/k8s.js';
import type { Proc } from '../../src/sandbox/processes.js';
import { kubeconfigFor } from './kubeconfig.js';
import { LineClient } from './line-client.js';
import { endpointText, ProxySyncLog, type Family, type LoggedSnapshot } from './proxy-sync-log.js';
import { RelayProcess } from './relay.js';
import { createTopology, type PodInfo, type PodSpec, type Topology } from './topology.js';
import { COMMAND } from './command.js';

const API_MAIN = fileURLToPath(new URL('./fake-apiserver-main.js', import.meta.url));
const RELAY_MAIN = fileURLToPath(new URL('./relay.js', import.meta.url));
const NAMESPACE = 'default';
/** How long a start or a sync may take; a slow kernel (User-Mode Linux: test/support/uml) sets KPT_E2E_WAIT_MS. */
const WAIT_MS = Number(process.env.KPT_E2E_WAIT_MS) || 15000;

export interface PortSpec {
  name: string;
  protocol?: 'TCP' | 'UDP';
  port: number;
  /** Port on the pods (default: port). */
  targetPort?: number;
  nodePort?: number;
}

export interface ServiceSpec {
  name: string;
  type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer' | 'ExternalName';
  /** One per family, IPv4 first for dual-stack; 'None' for a headless Service; omit for ExternalName. */
  clusterIPs?: string[] | 'None';
  ports?: PortSpec[];
  externalIPs?: string[];
  /** status.loadBalancer.ingress IPs. */
  loadBalancerIPs?: string[];
  loadBalancerSourceRanges?: string[];
  sessionAffinity?: 'ClientIP';
  externalTrafficPolicy?: 'Cluster' | 'Local';
  externalName?: string;
  labels?: Record<string, string>;
}

export type ProxyMode = 'nftables' | 'iptables' | 'ipvs' | 'userspace';
export type IptablesFlavour = 'nft' | 'legacy';

export interface ClusterOptions {
  pods: PodSpec[];
  /** --proxy-mode (default nftables). */
  mode?: ProxyMode;
  /**
   * iptables mode: the flavour node1's kubelet uses. As a kubelet would, the harness creates
   * KUBE-KUBELET-CANARY in that flavour's mangle table (both families) before the proxy starts;
   * the proxy has to find the flavour by itself. Default nft.
   */
  iptablesFlavour?: IptablesFlavour;
  /** More proxy flags, e.g. `['--iptables-sync-period', '5s']`. */
  extraArgs?: string[];
  /** Runs in the finished topology before the proxy starts, e.g. to leave another mode's rules behind. */
  beforeProxy?: (topo: Topology) => Promise<void>;
  /**
   * A KubeProxyConfiguration file for the proxy (`--config`), instead of the mode, cluster CIDR
   * and sync-period flags, so a test can change those under the running proxy. The kubeconfig,
   * node name, `--v 2` and extraArgs stay flags; `mode` must match the file's.
   */
  configFile?: string;
  /** Put a relay (relay.ts) between the proxy and the API server, for fault injection. */
  relay?: boolean;
}

/** The iptables tool of a family and flavour, e.g. `ip6tables-legacy`, `iptables-nft-save`. */
export function iptablesTool(family: Family, flavour: IptablesFlavour, suffix: '' | '-save' | '-restore' = ''): string {
  return `${family === 'IPv6' ? 'ip6tables' : 'iptables'}-${flavour}${suffix}`;
}

function familyOf(ip: string): Family {
  return ip.includes(':') ? 'IPv6' : 'IPv4';
}

export class E2ECluster {
  private readonly syncLog = new ProxySyncLog();
  private readonly services = new Map<string, ServiceSpec>();
  private readonly slices = new Set<string>();
  private barriers = 0;
  private kubeconfig: string | undefined;
  api!: LineClient;
  proxy!: Proc;
  /** Set with the `relay` option. */
  relay: RelayProcess | undefined;

  readonly mode: ProxyMode;
  readonly iptablesFlavour: IptablesFlavour;

  private constructor(
    readonly topo: Topology,
    private readonly opts: ClusterOptions,
  ) {
    this.mode = opts.mode ?? 'nftables';
    this.iptablesFlavour = opts.iptablesFlavour ?? 'nft';
  }

  /** Builds the topology, starts the API server with node-1 and node-2, then the proxy. */
  static async start(opts: ClusterOptions): Promise<E2ECluster> {
    const topo = await createTopology({ nodes: 2, pods: opts.pods, podStartMs: WAIT_MS });
    const c = new E2ECluster(topo, opts);
    try {
      // Like a real node, node1 has a default route, so packets no rule claims are forwarded
      // (and reach the proxy's forward-hook checks) instead of failing routing on node1.
      await topo.ipBatch('node1', [`route add default via ${topo.node(2).ip}`, `route add ::/0 via ${topo.node(2).ip6}`]);
      if (c.mode !== 'nftables') {
        for (const family of ['IPv4', 'IPv6'] as const) {
          await topo.exec('node1', iptablesTool(family, c.iptablesFlavour), ['-t', 'mangle', '-N', 'KUBE-KUBELET-CANARY']);
        }
      }
      await opts.beforeProxy?.(topo);
      await c.startApiServer(opts.relay === true);
      await c.startProxy();
    } catch (e) {
      await c.destroy();
      throw e;
    }
    return c;
  }

  private async startApiServer(relay: boolean): Promise<void> {
    const proc = this.topo.spawn('node1', process.execPath, [API_MAIN]);
    const first = await proc.waitFor(/^\{"url":/, { stream: 'stdout', timeoutMs: WAIT_MS });
    let { url } = JSON.parse(first) as { url: string };
    if (relay) {
      this.relay = await RelayProcess.start(this.topo.spawn('node1', process.execPath, [RELAY_MAIN, '--target', new URL(url).host]));
      url = `http://127.0.0.1:${this.relay.port}`;
    }
    this.api = new LineClient(proc.child, 'fake API server');
    for (const n of this.topo.nodes) {
      const node: Node = {
        metadata: { name: `node-${n.index}`, labels: { 'kubernetes.io/hostname': `node-${n.index}` } },
        spec: { podCIDRs: [n.podCidr, n.podCidr6] },
        status: {
          addresses: [
            { type: 'InternalIP', address: n.ip },
            { type: 'InternalIP', address: n.ip6 },
            { type: 'Hostname', address: `node-${n.index}` },
          ],
        },
      };
      await this.create('Node', node);
    }
    this.kubeconfig = kubeconfigFor(url);
  }

  private async startProxy(): Promise<void> {
    const since = this.mark();
    const ruleFlags = this.opts.configFile
      ? ['--config', this.opts.configFile]
      : ['--proxy-mode', this.mode, '--cluster-cidr', '10.244.0.0/16,fd00:244::/32', '--iptables-min-sync-period', '0s'];
    const args = [COMMAND, '--kubeconfig', this.kubeconfig!, '--hostname-override', 'node-1', ...ruleFlags, '--v', '2', ...(this.opts.extraArgs ?? [])];
    this.proxy = this.topo.spawn('node1', process.execPath, args);
    this.proxy.child.stderr!.on('data', (chunk: string) => this.syncLog.append(chunk));
    // The first sync programs every known Service for each family of the node.
    await this.waitForSnapshot(() => true, { family: 'IPv4', since, what: 'the first IPv4 sync' });
    await this.waitForSnapshot(() => true, { family: 'IPv6', since, what: 'the first IPv6 sync' });
  }

  /** The kubeconfig the proxy uses (through the relay when there is one). */
  get kubeconfigPath(): string {
    return this.kubeconfig!;
  }

  /** The proxy's log so far. */
  proxyLog(): string {
    return this.syncLog.text;
  }

  /** Stops the proxy (SIGTERM) and starts a new one; resolves after the new one's first sync. */
  async restartProxy(whileDown?: () => Promise<void>): Promise<void> {
    await this.proxy.stop();
    await whileDown?.();
    await this.startProxy();
  }

  async create(kind: ObjectKind, object: KubeObject): Promise<KubeObject> {
    return (await this.api.send({ op: 'create', kind, object })).object as KubeObject;
  }

  async update(kind: ObjectKind, object: KubeObject): Promise<KubeObject> {
    return (await this.api.send({ op: 'update', kind, object })).object as KubeObject;
  }

  async remove(kind: ObjectKind, name: string): Promise<void> {
    await this.api.send({ op: 'remove', kind, namespace: kind === 'Node' ? undefined : NAMESPACE, name });
  }

  /** Number of snapshots logged so far: pass it as `since` to ignore older ones. */
  mark(): number {
    return this.syncLog.mark();
  }

  /**
   * Waits for an applied snapshot (of `family`, newer than `since`) that satisfies check, and
   * returns it. Fails early if the proxy exits, with the end of its log.
   */
  async waitForSnapshot(
    check: (s: LoggedSnapshot) => boolean,
    opts: { family?: Family; since?: number; what?: string; timeoutMs?: number } = {},
  ): Promise<LoggedSnapshot> {
    const deadline = Date.now() + (opts.timeoutMs ?? WAIT_MS);
    const since = opts.since ?? 0;
    for (;;) {
      this.syncLog.parse();
      for (let k = since; k < this.syncLog.snapshots.length; k++) {
        const s = this.syncLog.snapshots[k]!;
        if ((opts.family === undefined || s.family === opts.family) && check(s)) return s;
      }
      if (this.proxy.child.exitCode !== null || this.proxy.child.signalCode !== null) {
        throw new Error(`proxy exited while waiting for ${opts.what ?? 'a sync'}; log:\n${this.syncLog.text.slice(-4000)}`);
      }
      if (Date.now() > deadline) {
        throw new Error(`timed out waiting for ${opts.what ?? 'a sync'}; log:\n${this.syncLog.text.slice(-4000)}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  private servicePorts(spec: ServiceSpec, family: Family): Array<{ portName: string; vip: string; port: PortSpec }> {
    if (!Array.isArray(spec.clusterIPs)) return [];
    const vip = spec.clusterIPs.find((ip) => familyOf(ip) === family);
    if (vip === undefined) return [];
    return (spec.ports ?? []).map((p) => ({ portName: `${NAMESPACE}/${spec.name}:${p.name}`, vip, port: p }));
  }

  private static serviceObject(spec: ServiceSpec): Service {
    const s: Service = {
      metadata: { name: spec.name, namespace: NAMESPACE, ...(spec.labels ? { labels: spec.labels } : {}) },
      spec: {
        type: spec.type ?? 'ClusterIP',
        ports: (spec.ports ?? []).map((p) => ({
          name: p.name,
          protocol: p.protocol ?? 'TCP',
          port: p.port,
          targetPort: p.targetPort ?? p.port,
          ...(p.nodePort !== undefined ? { nodePort: p.nodePort } : {}),
        })),
      },
    };
    const sp = s.spec!;
    if (spec.clusterIPs === 'None') {
      sp.clusterIP = 'None';
      sp.clusterIPs = ['None'];
    } else if (spec.clusterIPs) {
      sp.clusterIP = spec.clusterIPs[0]!;
      sp.clusterIPs = spec.clusterIPs;
      sp.ipFamilies = spec.clusterIPs.map(familyOf);
      sp.ipFamilyPolicy = spec.clusterIPs.length > 1 ? 'RequireDualStack' : 'SingleStack';
    }
    if (spec.externalIPs) sp.externalIPs = spec.externalIPs;
    if (spec.loadBalancerSourceRanges) sp.loadBalancerSourceRanges = spec.loadBalancerSourceRanges;
    if (spec.sessionAffinity) sp.sessionAffinity = spec.sessionAffinity;
    if (spec.externalTrafficPolicy) sp.externalTrafficPolicy = spec.externalTrafficPolicy;
    if (spec.externalName) sp.externalName = spec.externalName;
    if (spec.loadBalancerIPs) s.status = { loadBalancer: { ingress: spec.loadBalancerIPs.map((ip) => ({ ip, ipMode: 'VIP' })) } };
    return s;
  }

  /**
   * Creates a Service. Unless `expectRules` is false, waits until every port of it is in an applied
   * snapshot of each of its families.
   */
  async addService(spec: ServiceSpec, opts: { expectRules?: boolean } = {}): Promise<void> {
    const since = this.mark();
    await this.create('Service', E2ECluster.serviceObject(spec));
    this.services.set(spec.name, spec);
    if (opts.expectRules === false) return;
    for (const family of ['IPv4', 'IPv6'] as const) {
      const ports = this.servicePorts(spec, family);
      if (ports.length === 0) continue;
      await this.waitForSnapshot(
        (s) =>
          ports.every((p) => {
            const logged = s.services.get(p.portName);
            return logged !== undefined && logged.line.startsWith(`${p.portName} ${p.port.protocol ?? 'TCP'} ${endpointText(p.vip, p.port.port)}`);
          }),
        { family, since, what: `service ${spec.name} in the ${family} rules` },
      );
    }
  }

  /** Deletes a Service (not its EndpointSlices) and waits until no applied snapshot has it. */
  async removeService(name: string): Promise<void> {
    const spec = this.services.get(name);
    if (!spec) throw new Error(`removeService: no service ${name} was added`);
    const since = this.mark();
    await this.remove('Service', name);
    this.services.delete(name);
    for (const family of ['IPv4', 'IPv6'] as const) {
      const ports = this.servicePorts(spec, family);
      if (ports.length === 0) continue;
      await this.waitForSnapshot((s) => ports.every((p) => !s.services.has(p.portName)), {
        family,
        since,
        what: `service ${name} gone from the ${family} rules`,
      });
    }
  }

  /**
   * Makes the listed pods the (ready) endpoints of a Service, one EndpointSlice per family the
   * Service has (IPv4 for a Service without cluster IPs), labelled as the EndpointSlice controller
   * does. Unless `expectRules` is false, waits until the proxy has programmed exactly those endpoints.
   */
  async setEndpoints(service: string, pods: string[], opts: { expectRules?: boolean } = {}): Promise<void> {
    const spec = this.services.get(service);
    if (!spec) throw new Error(`setEndpoints: no service ${service} was added`);
    const infos = pods.map((p) => this.topo.pod(p));
    const since = this.mark();
    const families: Family[] = Array.isArray(spec.clusterIPs) ? spec.clusterIPs.map(familyOf) : ['IPv4'];
    const labels: Record<string, string> = { 'kubernetes.io/service-name': service };
    if (spec.clusterIPs === 'None') labels['service.kubernetes.io/headless'] = '';
    const waits: Array<{ family: Family; expected: Map<string, string[]> }> = [];
    for (const family of families) {
      const members = infos.filter((p) => family === 'IPv4' || p.ip6 !== undefined);
      const addr = (p: PodInfo): string => (family === 'IPv4' ? p.ip : p.ip6!);
      const name = `${service}-${family.toLowerCase()}`;
      const slice: EndpointSlice = {
        metadata: { name, namespace: NAMESPACE, labels },
        addressType: family,
        ports: (spec.ports ?? []).map((p) => ({ name: p.name, port: p.targetPort ?? p.port, protocol: p.protocol ?? 'TCP' })),
        endpoints: members.map((p) => ({
          addresses: [addr(p)],
          conditions: { ready: true, serving: true, terminating: false },
          nodeName: `node-${p.node}`,
          targetRef: { kind: 'Pod', name: p.name, namespace: NAMESPACE },
        })),
      };
      await (this.slices.has(name) ? this.update('EndpointSlice', slice) : this.create('EndpointSlice', slice));
      this.slices.add(name);
      const expected = new Map(
        this.servicePorts(spec, family).map((p) => [
          p.portName,
          members.map((m) => endpointText(addr(m), p.port.targetPort ?? p.port.port)).sort(),
        ]),
      );
      waits.push({ family, expected });
    }
    if (opts.expectRules === false) return;
    for (const { family, expected } of waits) {
      await this.waitForSnapshot(
        (s) =>
          [...expected].every(([portName, eps]) => {
            const logged = s.services.get(portName);
            return logged !== undefined && logged.clusterEndpoints.join(' ') === eps.join(' ');
          }),
        { family, since, what: `endpoints ${pods.join(',') || '(none)'} of ${service} in the ${family} rules` },
      );
    }
  }

  /**
   * Returns once every Service change made so far has been seen by the proxy and a sync after
   * it applied: a sentinel Service is added after them (the watch delivers in order) and awaited.
   */
  async barrier(): Promise<void> {
    const n = ++this.barriers;
    if (n > 250) throw new Error('barrier: out of sentinel addresses');
    const name = `barrier-${n}`;
    await this.addService({ name, clusterIPs: [`10.96.255.${n}`], ports: [{ name: 'p', port: 1 }] });
    await this.remove('Service', name);
    this.services.delete(name);
  }

  /** `nft list table <family> kube-proxy` in node1, or null when the table does not exist. */
  async nftTable(family: 'ip' | 'ip6'): Promise<string | null> {
    const res = await this.topo.exec('node1', 'nft', ['list', 'table', family, 'kube-proxy'], { check: false });
    if (res.code === 0) return res.stdout;
    if (/No such file or directory/.test(res.stderr)) return null;
    throw new Error(`nft list table ${family} kube-proxy: ${res.stderr.trim()}`);
  }

  /** `<flavour>-save` output (all tables) of one family in node1. */
  async iptablesSave(family: Family, flavour: IptablesFlavour = this.iptablesFlavour): Promise<string> {
    return (await this.topo.exec('node1', iptablesTool(family, flavour, '-save'))).stdout;
  }

  /**
   * What the proxy programmed for a family in node1, in the mode's own syntax: the kube-proxy
   * nftables table, or the iptables chain declarations and rules naming a KUBE- chain, kubelet's
   * chains (KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT, the filter table's KUBE-FIREWALL) left out.
   * null when there is nothing.
   */
  async ruleText(family: Family): Promise<string | null> {
    if (this.mode === 'nftables') return this.nftTable(family === 'IPv4' ? 'ip' : 'ip6');
    if (this.mode === 'ipvs') return this.ipvsRuleText(family);
    return this.iptablesRuleText(family);
  }

  /**
   * IPVS mode: the family's virtual servers (`ipvsadm -Sn`), its KUBE-* ipsets (`ipset save`)
   * and its iptables rules; null when there is nothing.
   */
  private async ipvsRuleText(family: Family): Promise<string | null> {
    const v6 = family === 'IPv6';
    const saved = await this.topo.exec('node1', 'ipvsadm', ['-Sn'], { check: false });
    const services = saved.stdout.split('\n').filter((l) => l.trim() !== '' && (l.split(' ')[2] ?? '').startsWith('[') === v6);
    const sets = (await this.topo.exec('node1', 'ipset', ['save'], { check: false })).stdout.split('\n').filter((l) => {
      const name = l.split(' ')[1] ?? '';
      return name.startsWith('KUBE-') && name.startsWith('KUBE-6-') === v6;
    });
    const chains = await this.iptablesRuleText(family);
    const all = [...services, ...sets, ...(chains ? [chains.trimEnd()] : [])];
    return all.length > 0 ? all.join('\n') + '\n' : null;
  }

  private async iptablesRuleText(family: Family): Promise<string | null> {
    const ours: string[] = [];
    let table = '';
    for (const l of (await this.iptablesSave(family)).split('\n')) {
      if (l.startsWith('*')) table = l.slice(1);
      const kubelets = table === 'filter' ? /KUBE-(KUBELET-CANARY|IPTABLES-HINT|FIREWALL)\b/ : /KUBE-(KUBELET-CANARY|IPTABLES-HINT)\b/;
      if (/^(:|-A )/.test(l) && /KUBE-/.test(l) && !kubelets.test(l)) ours.push(l);
    }
    return ours.length > 0 ? ours.join('\n') + '\n' : null;
  }

  /** Stops everything and removes the namespaces (safe to call more than once, and after a failed start). */
  async destroy(): Promise<void> {
    await this.topo.destroy();
    if (this.kubeconfig) rmSync(dirname(this.kubeconfig), { recursive: true, force: true });
    this.kubeconfig = undefined;
  }
}
