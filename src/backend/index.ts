// Backend factory: the proxy mode picks the kernel backend for each IP family.
import type { ProxyMode } from '../config/types.js';
import { log } from '../log.js';
import type { Backend, BackendConfig } from './types.js';

export interface BackendOptions {
  /** Print rulesets instead of touching the kernel. */
  dryRun: boolean;
}

/** null: the mode has no kernel backend yet; the proxy then only logs its snapshots. */
export function createBackend(mode: ProxyMode, cfg: BackendConfig, _opts: BackendOptions): Backend | null {
  log.warn(`proxy mode ${mode} has no kernel backend yet: no rules are programmed, snapshots are printed instead`, {
    family: cfg.family,
  });
  return null;
}

/** --cleanup: remove everything any mode may have left in the kernel. */
export async function cleanupAll(): Promise<void> {}
