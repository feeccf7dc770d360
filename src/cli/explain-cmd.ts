// `kube-proxy-ts explain`: load the cluster state once (manifests or API server), build the
// snapshot the proxy would program, and trace a packet through the rendered rules.
import { hostname } from 'node:os';
import { effectiveMode, resolveBackendConfigs, type ProxyMode } from '../config/index.js';
import type { Proxy } from '../proxy.js';
import { runExplainCommand, type ExplainSource } from '../explain/index.js';
import { ProxyModel } from '../model/tracker.js';
import type { IPFamily } from '../model/types.js';
import { Readiness } from '../runner/readiness.js';
import { ApiServerSource } from '../source/apiserver.js';
import { KubeClient } from '../source/kubeclient.js';
import { ManifestsSource } from '../source/manifests.js';
import type { Source, SourceEvent } from '../source/types.js';
import { parseNode } from '../model/node.js';
import { cidrContains, parseCIDR, parseIP } from '../net/ip.js';
import { parseCommandLine } from './flags.js';

/** Proxy flags explain also honours (they change masquerading and NodePort addresses). */
const PROXY_FLAGS = new Set(['--config', '--cluster-cidr', '--hostname-override', '--masquerade-all', '--nodeport-addresses',
  '--detect-local-mode', '--pod-bridge-interface', '--pod-interface-name-prefix', '--master']);

function splitArgs(argv: string[]): { proxy: string[]; explain: string[] } {
  const proxy: string[] = [];
  const explain: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const name = a.includes('=') ? a.slice(0, a.indexOf('=')) : a;
    if (!PROXY_FLAGS.has(name)) {
      explain.push(a);
      continue;
    }
    proxy.push(a);
    if (!a.includes('=') && name !== '--masquerade-all' && i + 1 < argv.length) proxy.push(argv[++i]!);
  }
  return { proxy, explain };
}

/** Every event of one full list, then the source stops. */
async function listOnce(source: Source): Promise<SourceEvent[]> {
  const events: SourceEvent[] = [];
  const readiness = new Readiness(['Service', 'EndpointSlice', 'Node']);
  const ready = new Promise<void>((resolve) => readiness.onReady(resolve));
  await source.start({ onEvent: (e) => events.push(e), onSynced: (k) => readiness.markSynced(k) });
  await ready;
  await source.stop();
  return events;
}

/** The name of the node whose pod CIDRs hold `ip`, among Node objects. */
function nodeHolding(ip: string, nodes: unknown[]): { name: string; cidr: string } | undefined {
  const addr = parseIP(ip, { leadingZeros: true, v4Mapped: true });
  if (addr === null) return undefined;
  for (const obj of nodes) {
    const name = (obj as { metadata?: { name?: unknown } }).metadata?.name;
    if (typeof name !== 'string') continue;
    const cidr = parseNode(obj, name).info.podCIDRs.find((c) => {
      const parsed = parseCIDR(c);
      return parsed !== null && cidrContains(parsed, addr);
    });
    if (cidr) return { name, cidr };
  }
  return undefined;
}

async function listNodes(client: KubeClient): Promise<unknown[]> {
  const res = await client.request('/api/v1/nodes');
  const body = (await res.body.json()) as { items?: unknown[] };
  if (res.status !== 200) throw new Error(`listing nodes failed: HTTP ${res.status}`);
  return body.items ?? [];
}

/** --from's value, read ahead of explain's own parsing (which reports a missing one). */
function fromArg(argv: string[]): string | undefined {
  const i = argv.findIndex((a) => a === '--from' || a.startsWith('--from='));
  if (i < 0) return undefined;
  return argv[i]!.includes('=') ? argv[i]!.slice('--from='.length) : argv[i + 1];
}

/** `explain` inside a running proxy: its last synced snapshots and its configuration. */
export async function explainLive(proxy: Proxy, argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const load = async (_src: ExplainSource, family: IPFamily, mode: ProxyMode) => {
    const snapshot = proxy.lastSnapshots.get(family);
    if (!snapshot) throw new Error(`this proxy has not synced ${family} yet`);
    const configs = resolveBackendConfigs({ ...proxy.configuration, mode }, { ips: snapshot.node.addresses, podCIDRs: snapshot.node.podCIDRs });
    const config = configs.find((c) => c.family === family);
    if (!config) throw new Error(`node ${snapshot.node.name} has no ${family} address`);
    return { snapshot, config };
  };
  const code = await runExplainCommand(argv, load, (s) => (out += s), (s) => (err += s), effectiveMode(proxy.configuration), true);
  return { code, out, err };
}

/** How long a running proxy may take to answer `explain --node`. */
const REMOTE_TIMEOUT_MS = 15_000;

/** `explain --node URL`: the running proxy at URL traces; its answer is printed as is. */
async function explainRemote(url: string, argv: string[]): Promise<number> {
  const query = new URLSearchParams(argv.map((a) => ['arg', a]));
  let res: Response;
  try {
    res = await fetch(`${url.replace(/\/+$/, '')}/debug/explain?${query}`, { signal: AbortSignal.timeout(REMOTE_TIMEOUT_MS) });
  } catch (e) {
    process.stderr.write(`explain: cannot reach the proxy at ${url}: ${(e as Error).message}\n`);
    return 1;
  }
  const body = await res.text();
  const code = Number(res.headers.get('x-exit-code') ?? (res.ok ? 0 : 1));
  if (res.status === 404) {
    process.stderr.write(`explain: ${url} does not serve /debug/explain (is it a kube-proxy-ts metrics address?)\n`);
    return 1;
  }
  (code === 0 ? process.stdout : process.stderr).write(body);
  return code;
}

/** argv without `--node URL` / `--node=URL`, and that URL. */
function takeNode(argv: string[]): { url: string | undefined; rest: string[] } {
  const rest: string[] = [];
  let url: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--node') url = argv[++i] ?? '';
    else if (a.startsWith('--node=')) url = a.slice('--node='.length);
    else rest.push(a);
  }
  return { url, rest };
}

export async function explainCommand(argv: string[]): Promise<number> {
  const remote = takeNode(argv);
  if (remote.url !== undefined) {
    if (!/^https?:\/\/[^/]+/.test(remote.url)) {
      process.stderr.write(`explain: --node '${remote.url}' is not a URL such as http://127.0.0.1:10249\n`);
      return 2;
    }
    return explainRemote(remote.url, remote.rest.filter((a) => a !== 'explain'));
  }
  const { proxy, explain } = splitArgs(argv);
  const cmd = parseCommandLine(proxy);
  const override = cmd.config.hostnameOverride.trim().toLowerCase();
  let model: ProxyModel | undefined;
  let nodeName = override;
  const load = async (src: ExplainSource, family: IPFamily, mode: ProxyMode) => {
    if (!model) {
      const client = src.manifests ? undefined : KubeClient.load({ kubeconfig: src.kubeconfig, master: cmd.master || undefined });
      let events: SourceEvent[] | undefined;
      if (override === '') {
        // The packet's own node is the one whose pod CIDR holds the source; say which was taken.
        if (src.manifests) events = await listOnce(new ManifestsSource(src.manifests, { rescanIntervalMs: 0 }));
        const nodes = events ? events.filter((e) => e.kind === 'Node').map((e) => e.object) : await listNodes(client!);
        const from = fromArg(explain) ?? '';
        const holder = nodeHolding(from, nodes);
        nodeName = holder?.name ?? hostname().trim().toLowerCase();
        process.stderr.write(
          from === '' ? `explain: on node ${nodeName} (this host's name); --hostname-override picks another\n`
          : holder
            ? `explain: tracing on node ${holder.name}, whose pod CIDR ${holder.cidr} holds ${from} (--hostname-override picks another)\n`
            : `explain: tracing on node ${nodeName} (this host's name): no node's pod CIDR holds ${from}; --hostname-override picks another\n`,
        );
      }
      events ??= await listOnce(
        src.manifests ? new ManifestsSource(src.manifests, { rescanIntervalMs: 0 }) : new ApiServerSource({ client: client!, nodeName }),
      );
      model = new ProxyModel({ nodeName });
      for (const e of events) model.apply(e);
    }
    const node = model.node();
    // The traced mode's sections (masquerade settings) apply, whatever mode the config names.
    const configs = resolveBackendConfigs({ ...cmd.config, mode }, { ips: node.addresses, podCIDRs: node.podCIDRs });
    const config = configs.find((c) => c.family === family);
    if (!config) throw new Error(`node ${nodeName} has no ${family} address`);
    return { snapshot: model.snapshot(family), config };
  };
  // A mode in the config file is the mode the proxy runs; explain traces that one unless told.
  return runExplainCommand(explain, load, undefined, undefined, cmd.config.mode || undefined);
}
