// Backend factory: the proxy mode picks the kernel backend for each IP family.
import type { ProxyMode } from '../config/types.js';
import { log } from '../log.js';
import { deleteTables } from './nftables/apply.js';
import { NftablesBackend } from './nftables/backend.js';
import { removeLeftovers } from './common/leftovers.js';
import type { Backend, BackendConfig } from './types.js';

export interface BackendOptions {
  /** Print rulesets instead of touching the kernel. */
  dryRun: boolean;
}

/** Whether createBackend programs the kernel in this mode (otherwise it only logs snapshots). */
export function hasKernelBackend(mode: ProxyMode): boolean {
  return mode === 'nftables';
}

/** null: the mode has no kernel backend yet; the proxy then only logs its snapshots. */
export function createBackend(mode: ProxyMode, cfg: BackendConfig, opts: BackendOptions): Backend | null {
  if (mode === 'nftables') return new NftablesBackend(cfg, { dryRun: opts.dryRun });
  log.warn(`proxy mode ${mode} has no kernel backend yet: no rules are programmed, snapshots are printed instead`, {
    family: cfg.family,
  });
  return null;
}

/** --cleanup: remove everything any mode may have left in the kernel (our nftables tables, KUBE-* iptables chains, IPVS). */
export async function cleanupAll(): Promise<void> {
  await deleteTables();
  await removeLeftovers();
}
