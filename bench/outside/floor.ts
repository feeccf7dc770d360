// The kernel floor of a full sync: what `nft -f` (iptables-nft-restore) alone costs to load the
// proxy's own full-sync input into an empty namespace. The input is built here by the proxy's own
// pipeline (flags → configuration, model, render) from the workload's objects: `nft list table`
// or `iptables-save` output would be a different text (nft parses it several times more slowly;
// iptables-nft-restore takes far longer for one large transaction than for the proxy's pieces).
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { resolveBackendConfigs } from '../../src/config/index.js';
import { parseCommandLine } from '../../src/cli/flags.js';
import { render } from '../../src/backend/nftables/render.js';
import { toNftScript } from '../../src/backend/nftables/script.js';
import { IptablesBackend } from '../../src/backend/iptables/backend.js';
import { ensureJumps, toolFor, type Flavour } from '../../src/backend/iptables/apply.js';
import { TOOL_ENV, type ExecOptions } from '../../src/node/exec.js';
import { isLargeCluster, jumpRules, renderContext } from '../../src/backend/iptables/render.js';
import type { BackendConfig } from '../../src/backend/types.js';
import type { Snapshot } from '../../src/model/types.js';
import { ProxyModel } from '../../src/model/tracker.js';
import { endpointSlice, NODE_NAME, node, service, type Workload } from './workload.js';

/** The workload's IPv4 snapshot and backend configuration, built as the proxy builds them from its flags. */
function workloadSnapshot(proxyFlags: string[], w: Workload, mode: 'nftables' | 'iptables'): { snapshot: Snapshot; cfg: BackendConfig } {
  const cmd = parseCommandLine(proxyFlags, {});
  const model = new ProxyModel({ nodeName: NODE_NAME, families: ['IPv4'] });
  model.apply({ kind: 'Node', type: 'ADDED', object: node() });
  for (let i = 0; i < w.services; i++) {
    model.apply({ kind: 'Service', type: 'ADDED', object: service(i, w.mixed) });
    model.apply({ kind: 'EndpointSlice', type: 'ADDED', object: endpointSlice(i, w.endpoints) });
  }
  const snapshot = model.snapshot('IPv4');
  const [cfg] = resolveBackendConfigs({ ...cmd.config, mode }, { ips: snapshot.node.addresses, podCIDRs: snapshot.node.podCIDRs });
  return { snapshot, cfg: cfg! };
}

/** The script the proxy sends for its first full sync of `w` into an empty kernel (IPv4). */
export function fullSyncScript(proxyFlags: string[], w: Workload): string {
  const { snapshot, cfg } = workloadSnapshot(proxyFlags, w, 'nftables');
  return toNftScript(render(snapshot, cfg));
}

/**
 * Milliseconds iptables-nft takes to load the proxy's own full sync of `w` in namespace `ns`
 * (which must hold none of our rules).
 */
export async function iptablesLoadMs(ns: string, proxyFlags: string[], w: Workload): Promise<number> {
  const { snapshot, cfg } = workloadSnapshot(proxyFlags, w, 'iptables');
  return (await bareRestoreMs(cfg, snapshot, 'nft', { wrap: ['ip', 'netns', 'exec', ns] })).ms;
}

/**
 * The bare restore of what the proxy sends for its first full sync of `snapshot` into an empty
 * kernel: the same transactions, each a whole `iptables-restore` process, then the jumps from the
 * built-in chains (all missing there; their commit walks every chain). Rendered before the clock starts.
 */
export async function bareRestoreMs(cfg: BackendConfig, snapshot: Snapshot, flavour: Flavour, exec: ExecOptions): Promise<{ ms: number; transactions: number }> {
  const inputs: string[] = [];
  await new IptablesBackend(cfg, { flavour, dryRun: true, out: (t) => inputs.push(t) }).sync(snapshot);
  const [cmd, ...args] = [...(exec.wrap ?? []), toolFor(cfg.family, flavour, 'restore'), '--noflush'];
  const t0 = performance.now();
  for (const input of inputs) execFileSync(cmd!, args, { input, maxBuffer: 1 << 30, env: TOOL_ENV });
  await ensureJumps(jumpRules(renderContext(cfg, { largeCluster: isLargeCluster(snapshot) })), cfg.family, flavour, exec, new Map());
  return { ms: performance.now() - t0, transactions: inputs.length + 1 };
}

/** Milliseconds `nft -f` takes to load `script` in namespace `ns` (which must hold no table). */
export function loadMs(ns: string, script: string, scratch: string): number {
  const file = join(scratch, 'full-sync.nft');
  writeFileSync(file, script);
  const t0 = performance.now();
  execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', file], { env: TOOL_ENV });
  return performance.now() - t0;
}
