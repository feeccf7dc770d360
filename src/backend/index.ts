// The backend layer's entry point: modes and their backends (see modes.ts).
import { MODES, type BackendOptions, type ProxyMode } from './modes.js';
import type { Backend, BackendConfig } from './types.js';

export { listLeftovers } from './common/leftovers.js';
export { cleanupAll, MODES, modeDescriptor, nodePortIPsOf, PROXY_MODE_NAMES } from './modes.js';
export type { BackendOptions, ModeDescriptor, ProxyMode, TraceableRules } from './modes.js';
export { LogOnlyBackend } from './logonly.js';

/** Whether the mode programs the kernel (otherwise its backend only logs snapshots). */
export function hasKernelBackend(mode: ProxyMode): boolean {
  return MODES[mode].programsKernel;
}

/** The backend of one IP family in a mode: a kernel backend, or a LogOnlyBackend when the mode has none yet. */
export function createBackend(mode: ProxyMode, cfg: BackendConfig, opts: BackendOptions): Backend {
  return MODES[mode].createBackend(cfg, opts);
}
