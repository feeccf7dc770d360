// The backend layer's entry point: modes and their backends (see modes.ts).
import { MODES, type BackendOptions, type ProxyMode } from './modes.js';
import type { Backend, BackendConfig } from './types.js';

export { listLeftovers } from './common/leftovers.js';
export { cleanupAll, MODES, modeDescriptor, nodePortIPsOf, PROXY_MODE_NAMES } from './modes.js';
export type { BackendOptions, ModeDescriptor, ProxyMode, TraceableRules } from './modes.js';

/** The backend of one IP family in a mode. */
export function createBackend(mode: ProxyMode, cfg: BackendConfig, opts: BackendOptions): Backend {
  return MODES[mode].createBackend(cfg, opts);
}

/** Begins the start-up work of a mode's backends made with `opts`, before they are made. */
export function prepareBackends(mode: ProxyMode, opts: BackendOptions): Promise<void> {
  return MODES[mode].prepare(opts);
}
