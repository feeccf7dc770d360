// What explain and --compare-modes share: tracing a mode's rules whatever their syntax, and
// the input interface a packet of one kind arrives on when local traffic is told by interface.
import type { TraceableRules } from '../backend/modes.js';
import type { BackendConfig } from '../backend/types.js';
import type { IPFamily } from '../model/types.js';
import { traceIptables } from './iptables/index.js';
import { traceIpvs } from './ipvs.js';
import { trace } from './nftables.js';
import type { TraceNode, TracePacket, TraceResult } from './tracer.js';

/** Traces a packet through a mode's rules. */
export function traceRules(rules: TraceableRules, family: IPFamily, packet: TracePacket, node: TraceNode): TraceResult {
  switch (rules.syntax) {
    case 'nftables':
      return trace(rules.ruleset, packet, node);
    case 'iptables':
      return traceIptables(rules.text, family, packet, node);
    case 'ipvs':
      return traceIpvs(rules.ruleset, packet, node);
  }
}

/** The interface a pod's or an outside packet arrives on, when local detection looks at interfaces. */
export function inInterfaceFor(kind: 'pod' | 'external', config: BackendConfig): string | undefined {
  if (config.detectLocalMode === 'BridgeInterface') return kind === 'pod' ? config.bridgeInterface : 'eth0';
  if (config.detectLocalMode === 'InterfaceNamePrefix') {
    // An interface that does (pod) or does not (external) carry the local prefix.
    return kind === 'pod' ? `${config.interfaceNamePrefix}0` : config.interfaceNamePrefix.startsWith('eth') ? 'uplink0' : 'eth0';
  }
  return undefined;
}
