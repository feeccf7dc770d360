// `kube-proxy-ts explain`: load the cluster state once (manifests or API server), build the
// snapshot the proxy would program, and trace a packet through the rendered rules.
import { hostname } from 'node:os';
import { resolveBackendConfigs, type ProxyMode } from '../config/index.js';
import { runExplainCommand, type ExplainSource } from '../explain/index.js';
import { ProxyModel } from '../model/tracker.js';
import type { IPFamily } from '../model/types.js';
import { Readiness } from '../runner/readiness.js';
import { ApiServerSource } from '../source/apiserver.js';
import { KubeClient } from '../source/kubeclient.js';
import { ManifestsSource } from '../source/manifests.js';
import type { Source } from '../source/types.js';
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

async function loadOnce(source: Source, nodeName: string): Promise<ProxyModel> {
  const model = new ProxyModel({ nodeName });
  const readiness = new Readiness(['Service', 'EndpointSlice', 'Node']);
  const ready = new Promise<void>((resolve) => readiness.onReady(resolve));
  await source.start({ onEvent: (e) => model.apply(e), onSynced: (k) => readiness.markSynced(k) });
  await ready;
  await source.stop();
  return model;
}

export async function explainCommand(argv: string[]): Promise<number> {
  const { proxy, explain } = splitArgs(argv);
  const cmd = parseCommandLine(proxy);
  const nodeName = (cmd.config.hostnameOverride || hostname()).trim().toLowerCase();
  let model: ProxyModel | undefined;
  const load = async (src: ExplainSource, family: IPFamily, mode: ProxyMode) => {
    if (!model) {
      const source: Source = src.manifests
        ? new ManifestsSource(src.manifests, { rescanIntervalMs: 0 })
        : new ApiServerSource({ client: KubeClient.load({ kubeconfig: src.kubeconfig, master: cmd.master || undefined }), nodeName });
      model = await loadOnce(source, nodeName);
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
