// The first step of every mode that writes iptables rules (iptables, ipvs, userspace): settle on
// a flavour, then remove the other modes' leftovers with it.
import { log } from '../../log.js';
import type { IPFamily } from '../../model/types.js';
import type { ExecOptions } from '../../node/exec.js';
import { detectFlavour, type Flavour } from './apply.js';

/** The configured flavour, else the node's (detected and logged), after `removeLeftovers` ran with it. */
export async function startUpFlavour(
  family: IPFamily,
  configured: Flavour | undefined,
  exec: ExecOptions,
  removeLeftovers?: (flavour: Flavour) => Promise<void>,
): Promise<Flavour> {
  let flavour = configured;
  if (!flavour) {
    const d = await detectFlavour(exec);
    flavour = d.flavour;
    log.info('using iptables flavour', { family, flavour, reason: d.reason });
  }
  await removeLeftovers?.(flavour);
  return flavour;
}
