// The kernel floor of a full sync: what `nft -f` alone costs to load the proxy's own full-sync
// script into an empty namespace. The script is built here by the proxy's own pipeline (flags →
// configuration, model, render) from the workload's objects: `nft list table` output would be
// a different text that nft parses several times more slowly.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { resolveBackendConfigs } from '../../src/config/index.js';
import { parseCommandLine } from '../../src/cli/flags.js';
import { render, toNftScript } from '../../src/backend/nftables/render.js';
import { ProxyModel } from '../../src/model/tracker.js';
import { endpointSlice, NODE_NAME, node, service, type Workload } from './workload.js';

/** The script the proxy sends for its first full sync of `w` into an empty kernel (IPv4). */
export function fullSyncScript(proxyFlags: string[], w: Workload): string {
  const cmd = parseCommandLine(proxyFlags, {});
  const model = new ProxyModel({ nodeName: NODE_NAME, families: ['IPv4'] });
  model.apply({ kind: 'Node', type: 'ADDED', object: node() });
  for (let i = 0; i < w.services; i++) {
    model.apply({ kind: 'Service', type: 'ADDED', object: service(i, w.mixed) });
    model.apply({ kind: 'EndpointSlice', type: 'ADDED', object: endpointSlice(i, w.endpoints) });
  }
  const snapshot = model.snapshot('IPv4');
  const [cfg] = resolveBackendConfigs({ ...cmd.config, mode: 'nftables' }, { ips: snapshot.node.addresses, podCIDRs: snapshot.node.podCIDRs });
  return toNftScript(render(snapshot, cfg!));
}

/** Milliseconds `nft -f` takes to load `script` in namespace `ns` (which must hold no table). */
export function loadMs(ns: string, script: string, scratch: string): number {
  const file = join(scratch, 'full-sync.nft');
  writeFileSync(file, script);
  const t0 = performance.now();
  execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', file]);
  return performance.now() - t0;
}
