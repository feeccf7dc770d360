// The first step of every mode that writes iptables rules (iptables, ipvs, userspace): settle on
// a flavour, then remove the other modes' leftovers with it. One start-up serves every family's
// backend, and the proxy begins it while the first lists load (modes.ts).
import { log } from '../../log.js';
import type { IPFamily } from '../../model/types.js';
import type { ExecOptions } from '../../node/exec.js';
import { detectFlavour, type Flavour } from './apply.js';
import type { KernelChains } from './save.js';

export interface StartUp {
  flavour: Flavour;
  /**
   * Our tables as the cleanup read them, by family, where it then wrote nothing. Each is handed
   * out once and then dropped: the start-up lives as long as the proxy.
   */
  saves: Map<IPFamily, KernelChains>;
  /** Date.now() when the saves were read. */
  savedAt: number;
}

/**
 * How old a start-up save may be and still stand for the kernel at the first sync: long lists
 * give others time to change the rules (what changes later, the verification finds).
 */
const SAVE_TRUSTED_MS = 10_000;

/** The node's flavour (detected and logged), after `removeLeftovers` ran with it. */
export async function startUp(exec: ExecOptions, removeLeftovers: (flavour: Flavour) => Promise<ReadonlyMap<IPFamily, KernelChains> | void>): Promise<StartUp> {
  const d = await detectFlavour(exec);
  log.info('using iptables flavour', { flavour: d.flavour, reason: d.reason });
  const saves = new Map((await removeLeftovers(d.flavour)) ?? []);
  return { flavour: d.flavour, saves, savedAt: Date.now() };
}

/**
 * A backend's flavour: the configured one, else the start-up's, else the node's (detected and
 * logged); with the start-up's save of `family` when it is recent and of that flavour (the first
 * caller of a family gets it; it is not kept for another).
 */
export async function startUpFlavour(
  family: IPFamily,
  configured: Flavour | undefined,
  exec: ExecOptions,
  shared?: () => Promise<StartUp>,
): Promise<{ flavour: Flavour; save?: KernelChains }> {
  if (shared) {
    const s = await shared();
    const flavour = configured ?? s.flavour;
    const taken = s.saves.get(family);
    s.saves.delete(family);
    const save = flavour === s.flavour && Date.now() - s.savedAt <= SAVE_TRUSTED_MS ? taken : undefined;
    return save === undefined ? { flavour } : { flavour, save };
  }
  if (configured) return { flavour: configured };
  const d = await detectFlavour(exec);
  log.info('using iptables flavour', { family, flavour: d.flavour, reason: d.reason });
  return { flavour: d.flavour };
}
