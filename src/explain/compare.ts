// `explain --compare-modes`: every service address a client can use (cluster IP, external and
// load-balancer IPs, each NodePort on the node's addresses), from each kind of client, traced
// through each mode's rendered rules; any difference in verdict, reachable endpoints or
// masquerading is reported. Switching modes is safe when there is none.
import type { ModeDescriptor } from '../backend/modes.js';
import type { BackendConfig } from '../backend/types.js';
import type { IPFamily, ServicePortState, Snapshot } from '../model/types.js';
import { formatIP, ipFromBigInt, ipToBigInt, parseCIDR, parseIP } from '../net/ip.js';
import { byDesignReason, type ClientKind, type ModeOutcome, type Outcome } from './by-design.js';
import { inInterfaceFor, traceRules } from './rules.js';
import { TraceError, type TracePacket, type TraceResult } from './tracer.js';
import { TRACE_IP } from './values.js';

export type { ClientKind, ModeOutcome, Outcome };

export interface Client {
  kind: ClientKind;
  packet: Pick<TracePacket, 'sourceIP' | 'from' | 'inInterface'>;
}

export interface Difference {
  service: string;
  target: string;
  client: string;
  outcomes: ModeOutcome[];
}

/** A difference a documented mode behaviour explains, with that behaviour. */
export interface ByDesignDifference extends Difference {
  reason: string;
}

export interface ModeInput {
  mode: ModeDescriptor;
  snapshot: Snapshot;
  config: BackendConfig;
}

const EXTERNAL_CLIENT: Record<IPFamily, string> = { IPv4: '203.0.113.77', IPv6: '2001:db8:ffff::77' };

/** An address `offset` hosts into the block after `cidr` (`skip` blocks on), inside that block. */
function hostIn(cidrText: string, skip: number): string | undefined {
  const c = parseCIDR(cidrText, TRACE_IP);
  if (!c) return undefined;
  const bits = c.family === 'IPv4' ? 32 : 128;
  const size = 1n << BigInt(bits - c.prefix);
  if (size < 4n) return undefined;
  const offset = size > 252n ? 250n : size - 2n;
  const n = ipToBigInt(c) + BigInt(skip) * size + offset;
  if (n >= 1n << BigInt(bits)) return undefined;
  return formatIP(ipFromBigInt(n, c.family));
}

/** The four kinds of client, with addresses derived from the node's pod CIDR. */
export function clientsFor(snapshot: Snapshot, config: BackendConfig): Client[] {
  const family = config.family;
  const podCIDR = snapshot.node.podCIDRs.find((c) => parseCIDR(c, TRACE_IP)?.family === family);
  const out: Client[] = [];
  const nodeIP = config.nodeIPs[0] ?? snapshot.node.addresses.find((a) => parseIP(a, TRACE_IP)?.family === family);
  if (podCIDR) {
    const local = hostIn(podCIDR, 0);
    // A pod of another node: the pod CIDR block next to this node's (it arrives on the uplink).
    const other = hostIn(podCIDR, 1);
    const pod = (source: string, kind: 'pod' | 'external'): Client['packet'] => {
      const iif = inInterfaceFor(kind, config);
      return { sourceIP: source, from: kind, ...(iif ? { inInterface: iif } : {}) };
    };
    if (local) out.push({ kind: 'local pod', packet: pod(local, 'pod') });
    if (other) out.push({ kind: 'other-node pod', packet: pod(other, 'external') });
  }
  if (nodeIP) out.push({ kind: 'node', packet: { sourceIP: nodeIP, from: 'host' } });
  const iif = inInterfaceFor('external', config);
  out.push({ kind: 'external', packet: { sourceIP: EXTERNAL_CLIENT[family], from: 'external', ...(iif ? { inInterface: iif } : {}) } });
  return out;
}

function same(a: string, b: string): boolean {
  const x = parseIP(a, TRACE_IP);
  const y = parseIP(b, TRACE_IP);
  return x !== null && y !== null && formatIP(x) === formatIP(y);
}

/** Every address:port a client can reach a service port on; `nodeAddrs` serve its NodePort. */
export function targetsFor(s: ServicePortState, family: IPFamily, nodeAddrs: string[]): Array<{ ip: string; port: number }> {
  const info = s.info;
  const mine = (ip: string): boolean => parseIP(ip, TRACE_IP)?.family === family;
  const out: Array<{ ip: string; port: number }> = [];
  if (info.clusterIP && mine(info.clusterIP)) out.push({ ip: info.clusterIP, port: info.port });
  for (const ip of [...info.externalIPs, ...info.loadBalancerIPs]) if (mine(ip)) out.push({ ip, port: info.port });
  if (info.nodePort > 0) for (const ip of nodeAddrs) out.push({ ip, port: info.nodePort });
  return out.filter((t, i) => out.findIndex((u) => same(u.ip, t.ip) && u.port === t.port) === i);
}

const endpointText = (e: { ip: string; port: number }): string => `${e.ip.includes(':') ? `[${e.ip}]` : e.ip}:${e.port}`;

function outcomeOf(r: TraceResult): Outcome {
  const endpoints = r.verdict === 'ACCEPT' ? r.endpoints.map((e) => `${endpointText(e)}${e.masquerade ? '+masq' : ''}`).sort() : [];
  // An accepted packet that is not translated still says whether its source is rewritten.
  if (r.verdict === 'ACCEPT' && r.endpoints.length === 0) endpoints.push(r.masquerade ? 'untranslated+masq' : 'untranslated');
  return { verdict: r.verdict, endpoints };
}

function outcomeText(o: Outcome | { error: string }): string {
  if ('error' in o) return `cannot trace: ${o.error}`;
  return o.endpoints.length > 0 ? `${o.verdict} -> ${o.endpoints.join(', ')}` : o.verdict;
}

/** Formats one difference on one line per mode. */
export function formatDifference(d: Difference): string {
  const lines = [`${d.service} ${d.target} from ${d.client}:`];
  for (const o of d.outcomes) lines.push(`  ${o.mode}: ${outcomeText(o.outcome)}`);
  return lines.join('\n');
}

/**
 * Traces every service target from every client through each mode; returns the unexpected
 * differences, those by design (see by-design.ts), and the number of comparisons.
 */
export function compareModes(inputs: ModeInput[]): { differences: Difference[]; byDesign: ByDesignDifference[]; compared: number } {
  const first = inputs[0]!;
  const family = first.config.family;
  const nodeAddrs = [...new Set([...first.config.nodeIPs, ...first.snapshot.node.addresses].filter((a) => parseIP(a, TRACE_IP)?.family === family))];
  const clients = clientsFor(first.snapshot, first.config);
  const rules = inputs.map((i) => ({ name: i.mode.name, rules: i.mode.traceableRules!(i.snapshot, i.config), node: { localIPs: [...i.config.nodeIPs, ...i.snapshot.node.addresses] } }));
  const differences: Difference[] = [];
  const byDesign: ByDesignDifference[] = [];
  let compared = 0;
  for (const key of [...first.snapshot.services.keys()].sort()) {
    const s = first.snapshot.services.get(key)!;
    const protocol = s.info.protocol;
    for (const t of targetsFor(s, family, nodeAddrs)) {
      const traced = clients.map((c) => {
        const packet: TracePacket = { ...c.packet, destIP: t.ip, destPort: t.port, protocol };
        const outcomes = rules.map((r): ModeOutcome => {
          try {
            return { mode: r.name, outcome: outcomeOf(traceRules(r.rules, family, packet, r.node)) };
          } catch (e) {
            if (!(e instanceof TraceError)) throw e;
            return { mode: r.name, outcome: { error: e.message } };
          }
        });
        return { client: c, outcomes };
      });
      const localEndpoints = s.localEndpoints.filter((e) => parseIP(e.ip, TRACE_IP)?.family === family).map(endpointText);
      const clusterIP = s.info.clusterIP !== '' && same(s.info.clusterIP, t.ip) && t.port === s.info.port;
      for (const { client: c, outcomes } of traced) {
        compared++;
        const texts = outcomes.map((o) => outcomeText(o.outcome));
        if (texts.every((x) => x === texts[0])) continue;
        const target = t.ip.includes(':') ? `${protocol} [${t.ip}]:${t.port}` : `${protocol} ${t.ip}:${t.port}`;
        const d: Difference = { service: s.info.name, target, client: `${c.kind} ${c.packet.sourceIP}`, outcomes };
        const reason = byDesignReason({ client: c.kind, clusterIP, externalPolicyLocal: s.info.externalPolicyLocal, localEndpoints, outcomes });
        if (reason === undefined) differences.push(d);
        else byDesign.push({ ...d, reason });
      }
    }
  }
  return { differences, byDesign, compared };
}
