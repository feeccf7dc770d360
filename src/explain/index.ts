// `explain`: where does a packet to VIP:port go, and why. Human text over the tracer's
// result, and the CLI subcommand (the caller supplies how a snapshot is loaded).
import { modeDescriptor, PROXY_MODE_NAMES, type ModeDescriptor, type ProxyMode } from '../backend/modes.js';
import type { NftRuleset } from '../backend/nftables/layout.js';
import type { BackendConfig } from '../backend/types.js';
import type { IPFamily, Snapshot } from '../model/types.js';
import { cidrContains, formatIP, parseCIDR, parseIP, type IP } from '../net/ip.js';
import { TRACE_IP } from './values.js';
import { compareModes, formatDifference, type ModeInput } from './compare.js';
import { inInterfaceFor, traceRules } from './rules.js';
import { trace } from './nftables.js';
import { TraceError, type TraceBranch, type TracePacket, type TraceNode, type TraceResult } from './tracer.js';

export { trace, traceTable, tableFromRuleset } from './nftables.js';
export type { TraceTable, TraceChain, TraceSet } from './nftables.js';
export { TraceError } from './tracer.js';
export type { TraceResult, TracePacket, TraceNode, TraceBranch, TraceEndpoint, AffinityPin } from './tracer.js';

function hostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

function branchLine(b: TraceBranch): string {
  const parts: string[] = [b.verdict];
  if (b.endpoint) parts.push(`to ${hostPort(b.endpoint.ip, b.endpoint.port)}`);
  else if (b.verdict === 'ACCEPT') parts.push('not translated');
  if (b.masquerade) parts.push('masqueraded');
  for (const p of b.pins) parts.push(`records ${p.key} in @${p.set}${p.timeout ? ` for ${p.timeout}` : ''}`);
  const when = b.conditions.length > 0 ? `when ${b.conditions.join(', ')}: ` : '';
  return `  ${when}${parts.join(', ')}`;
}

/** Human-readable report of a trace: verdict, endpoints, masquerade, the matched rules and each branch. */
export function formatTrace(packet: TracePacket, result: TraceResult): string {
  const out: string[] = [];
  const iif = packet.inInterface && packet.from !== 'host' ? ` on ${packet.inInterface}` : '';
  out.push(`packet: ${packet.protocol} ${packet.sourceIP} -> ${hostPort(packet.destIP, packet.destPort)} (from ${packet.from}${iif}, new connection)`);
  out.push(`verdict: ${result.verdict}`);
  if (result.endpoints.length > 0) {
    out.push(`endpoints (${result.endpoints.length}):`);
    for (const e of result.endpoints) {
      const notes: string[] = [];
      if (e.masquerade) notes.push('masqueraded');
      for (const p of e.pins) notes.push(`affinity: pins the client in @${p.set}${p.timeout ? ` for ${p.timeout}` : ''}`);
      out.push(`  ${hostPort(e.ip, e.port)}${notes.length ? `  (${notes.join('; ')})` : ''}`);
    }
  } else if (result.verdict === 'ACCEPT') {
    out.push('endpoints: none (the destination is not translated)');
  } else {
    out.push('endpoints: none');
  }
  const accepted = result.branches.filter((b) => b.verdict === 'ACCEPT');
  const masqueraded = accepted.filter((b) => b.masquerade).length;
  const masq =
    masqueraded === 0 ? 'no (the client IP is preserved)'
    : masqueraded === accepted.length ? 'yes (source NAT to the node address)'
    : `only for ${result.endpoints.filter((e) => e.masquerade).map((e) => hostPort(e.ip, e.port)).join(', ')}`;
  out.push(`masquerade: ${result.verdict === 'ACCEPT' ? masq : 'n/a'}`);
  out.push('path:');
  for (const p of result.path) out.push(`  ${p}`);
  if (result.branches.length > 1) {
    out.push(`branches (${result.branches.length}):`);
    for (const b of result.branches) out.push(branchLine(b));
  }
  return out.join('\n') + '\n';
}

/** Traces a packet through a rendered ruleset and describes the result in text. */
export function explain(ruleset: NftRuleset, packet: TracePacket, node: TraceNode): string {
  return formatTrace(packet, trace(ruleset, packet, node));
}

/** Where the snapshot comes from, as given on the command line. */
export interface ExplainSource {
  manifests?: string;
  kubeconfig?: string;
  /** A running proxy's metrics address (`http://HOST:PORT`): it traces on its own state. */
  node?: string;
  /** The proxy process itself, serving `/debug/explain`. */
  live?: true;
}

/** Loads the model's snapshot and the backend configuration resolved for one IP family in a mode. */
export type SnapshotLoader = (
  source: ExplainSource,
  family: IPFamily,
  mode: ProxyMode,
) => Promise<{ snapshot: Snapshot; config: BackendConfig }>;

/** The mode explain traces when neither --proxy-mode nor a config file's mode says: the proxy's own default. */
const DEFAULT_MODE = 'iptables';

export const EXPLAIN_USAGE = `Usage: kube-proxy-ts explain (--manifests DIR | --kubeconfig FILE | --node URL) --from SRC_IP --to DST_IP:PORT
       [--proto tcp|udp|sctp] [--source-kind pod|host|external] [--in-interface NAME]
       [--proxy-mode ${PROXY_MODE_NAMES.join('|')}] [--hostname-override NODE] [--config FILE] [--json]
       kube-proxy-ts explain --compare-modes MODE,MODE[,...] (--manifests DIR | --kubeconfig FILE)
       [--hostname-override NODE] [--config FILE] [--json]
Traces a new connection through the rules this proxy would program in the given mode and prints
where it goes (endpoints), whether it is masqueraded, the verdict, and every rule matched.
The mode defaults to the one the proxy would run: --config's mode, else ${DEFAULT_MODE}, as
upstream. The userspace mode's rules cannot be traced. In ipvs mode the chains, ipsets and
virtual servers are traced; bridged pod traffic and IPVS persistence are not modelled.
--node asks a running proxy (its metrics address, e.g. http://127.0.0.1:10249) to trace on the
state it has programmed, in its own mode unless --proxy-mode says otherwise.
--compare-modes traces every service port (cluster IP, external and load-balancer IPs, each
NodePort on the node's addresses) from a local pod, another node's pod, the node itself and an
external client through each listed mode, and lists every difference in verdict, endpoints or
masquerading. Differences a documented mode behaviour explains (ipvs masquerading the node's own
connections; ipvs serving Local external addresses from local endpoints for every client) are
listed apart, by design; exit 0 when no other difference is found, 1 when one is (the node is
--hostname-override's).
The packet is traced on the node --hostname-override names; without it, on the node whose pod
CIDR holds SRC_IP (else this host's name), and explain says which on stderr.
Proxy flags that change the rules are honoured too: --config, --cluster-cidr, --masquerade-all,
--nodeport-addresses, --detect-local-mode, --pod-bridge-interface, --pod-interface-name-prefix, --master.
The source kind is guessed from SRC_IP (a node IP: host; inside the node's pod CIDRs or the
local-traffic CIDRs: pod; otherwise external) unless --source-kind is given.
`;

class UsageError extends Error {}

interface ExplainArgs {
  source: ExplainSource;
  mode: ModeDescriptor;
  from: string;
  to: string;
  port: number;
  proto: TracePacket['protocol'];
  kind?: TracePacket['from'];
  iif?: string;
  json: boolean;
}

function parseArgs(argv: string[], defaultMode: string, live: boolean): ExplainArgs | 'help' {
  const args = argv[0] === 'explain' ? argv.slice(1) : argv;
  const vals = new Map<string, string>();
  let json = false;
  const known = ['--manifests', '--kubeconfig', '--node', '--from', '--to', '--proto', '--source-kind', '--in-interface', '--proxy-mode'];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '-h' || a === '--help') return 'help';
    if (a === '--json') { json = true; continue; }
    const eq = a.indexOf('=');
    const name = eq > 0 ? a.slice(0, eq) : a;
    if (!known.includes(name)) throw new UsageError(`unknown argument '${a}'`);
    const v = eq > 0 ? a.slice(eq + 1) : args[++i];
    if (v === undefined || v === '') throw new UsageError(`${name} needs a value`);
    vals.set(name, v);
  }
  const manifests = vals.get('--manifests');
  const kubeconfig = vals.get('--kubeconfig');
  const node = vals.get('--node');
  const sources = [manifests, kubeconfig, node].filter((v) => v !== undefined).length;
  if (live ? sources !== 0 : sources !== 1) throw new UsageError(live ? 'a running proxy traces on its own state: no --manifests, --kubeconfig or --node' : 'give exactly one of --manifests, --kubeconfig and --node');
  const from = vals.get('--from');
  const to = vals.get('--to');
  if (!from) throw new UsageError('--from is required');
  if (!to) throw new UsageError('--to is required');
  const fromIP = parseIP(from, TRACE_IP);
  if (fromIP === null) throw new UsageError(`--from '${from}' is not an IP address`);
  const m = /^\[(.+)\]:(\d+)$/.exec(to) ?? /^([^:]+):(\d+)$/.exec(to);
  const toIP = m ? parseIP(m[1], TRACE_IP) : null;
  if (!m || toIP === null) throw new UsageError(`--to '${to}' is not IP:PORT (IPv6: [IP]:PORT)`);
  const port = Number(m[2]);
  if (port < 1 || port > 65535) throw new UsageError(`--to port ${port} is out of range`);
  if (fromIP.family !== toIP.family) throw new UsageError('--from and --to must be of the same IP family');
  const proto = (vals.get('--proto') ?? 'tcp').toUpperCase();
  if (proto !== 'TCP' && proto !== 'UDP' && proto !== 'SCTP') throw new UsageError(`--proto '${vals.get('--proto')}' is not tcp, udp or sctp`);
  const kind = vals.get('--source-kind');
  if (kind !== undefined && kind !== 'pod' && kind !== 'host' && kind !== 'external') {
    throw new UsageError(`--source-kind '${kind}' is not pod, host or external`);
  }
  const modeName = vals.get('--proxy-mode') ?? defaultMode;
  const mode = modeDescriptor(modeName);
  if (!mode) throw new UsageError(`--proxy-mode '${modeName}' is not ${PROXY_MODE_NAMES.join(', ')}`);
  const out: ExplainArgs = {
    source: live ? { live } : manifests !== undefined ? { manifests } : kubeconfig !== undefined ? { kubeconfig } : { node: node! },
    mode,
    from,
    to: m[1]!,
    port,
    proto,
    json,
  };
  if (kind) out.kind = kind;
  const iif = vals.get('--in-interface');
  if (iif) out.iif = iif;
  return out;
}

// Configured CIDRs are read as the renderer reads them, leading zeros included.
const CONFIG_CIDR = { leadingZeros: true, v4Mapped: true };

function inCIDRs(ip: IP, cidrs: string[]): boolean {
  return cidrs.some((c) => {
    const cidr = parseCIDR(c, CONFIG_CIDR);
    return cidr !== null && cidrContains(cidr, ip);
  });
}

/** The packet the command describes, with the source kind and input interface filled in. */
function packetFor(a: ExplainArgs, snapshot: Snapshot, config: BackendConfig): TracePacket {
  const from = parseIP(a.from, TRACE_IP)!;
  const fromText = formatIP(from);
  const same = (x: string): boolean => {
    const ip = parseIP(x, TRACE_IP);
    return ip !== null && formatIP(ip) === fromText;
  };
  const kind =
    a.kind ??
    (config.nodeIPs.some(same) || snapshot.node.addresses.some(same) ? 'host'
    : inCIDRs(from, [...snapshot.node.podCIDRs, ...config.localCIDRs]) ? 'pod'
    : 'external');
  const pk: TracePacket = { sourceIP: a.from, destIP: a.to, protocol: a.proto, destPort: a.port, from: kind };
  if (kind === 'host') return pk;
  const iif = a.iif ?? inInterfaceFor(kind, config);
  if (iif) pk.inInterface = iif;
  return pk;
}

/**
 * `kube-proxy-ts explain ...`: prints the trace to `out` and returns the exit code
 * (0 traced, 1 the snapshot or rules could not be used, 2 bad arguments).
 */
export async function runExplainCommand(
  argv: string[],
  loadSnapshot: SnapshotLoader,
  out: (s: string) => void = (s) => process.stdout.write(s),
  err: (s: string) => void = (s) => process.stderr.write(s),
  defaultMode: string = DEFAULT_MODE,
  /** Run inside the proxy (`/debug/explain`): the loader reads the proxy's own state. */
  live = false,
): Promise<number> {
  if (!live && argv.some((a) => a === '--compare-modes' || a.startsWith('--compare-modes='))) return runCompare(argv, loadSnapshot, out, err);
  let args: ExplainArgs | 'help';
  try {
    args = parseArgs(argv, defaultMode, live);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    err(`explain: ${e.message}\n${EXPLAIN_USAGE}`);
    return 2;
  }
  if (args === 'help') {
    out(EXPLAIN_USAGE);
    return 0;
  }
  const traceable = args.mode.traceableRules;
  if (!traceable) {
    err(`explain: proxy mode ${args.mode.name} cannot be traced yet: no traceable form of its rules (try --proxy-mode iptables, nftables or ipvs)\n`);
    return 1;
  }
  const family: IPFamily = parseIP(args.to, TRACE_IP)!.family;
  try {
    const { snapshot, config } = await loadSnapshot(args.source, family, args.mode.name);
    const rules = traceable(snapshot, config);
    const packet = packetFor(args, snapshot, config);
    const node = { localIPs: [...config.nodeIPs, ...snapshot.node.addresses] };
    const result = traceRules(rules, family, packet, node);
    out(args.json ? JSON.stringify({ packet, ...result }, null, 2) + '\n' : formatTrace(packet, result));
    return 0;
  } catch (e) {
    const msg = e instanceof TraceError ? `cannot trace: ${e.message}` : `failed: ${(e as Error).message ?? String(e)}`;
    err(`explain: ${msg}\n`);
    return 1;
  }
}

const indent = (text: string): string => text.split('\n').map((l) => `  ${l}`).join('\n');

/** `explain --compare-modes A,B --manifests DIR|--kubeconfig FILE [--json]`: exit 0 no unexpected differences, 1 some, 2 bad arguments. */
async function runCompare(argv: string[], loadSnapshot: SnapshotLoader, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  const args = argv[0] === 'explain' ? argv.slice(1) : argv;
  const vals = new Map<string, string>();
  let json = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--json') { json = true; continue; }
    const eq = a.indexOf('=');
    const name = eq > 0 ? a.slice(0, eq) : a;
    const v = eq > 0 ? a.slice(eq + 1) : args[++i];
    if (!['--compare-modes', '--manifests', '--kubeconfig'].includes(name) || v === undefined || v === '') {
      err(`explain: --compare-modes takes only --manifests or --kubeconfig and --json besides proxy flags ('${a}')\n${EXPLAIN_USAGE}`);
      return 2;
    }
    vals.set(name, v);
  }
  const names = [...new Set(vals.get('--compare-modes')!.split(',').map((m) => m.trim()).filter((m) => m !== ''))];
  const modes = names.map((n) => modeDescriptor(n));
  const bad = names.find((_, i) => !modes[i]?.traceableRules);
  if (bad !== undefined || names.length < 2) {
    err(`explain: --compare-modes needs two or more of ${PROXY_MODE_NAMES.filter((m) => modeDescriptor(m)?.traceableRules).join(', ')}${bad !== undefined ? ` ('${bad}' is not one)` : ''}\n`);
    return 2;
  }
  const manifests = vals.get('--manifests');
  const kubeconfig = vals.get('--kubeconfig');
  if ((manifests === undefined) === (kubeconfig === undefined)) {
    err('explain: give exactly one of --manifests and --kubeconfig\n');
    return 2;
  }
  const source: ExplainSource = manifests !== undefined ? { manifests } : { kubeconfig: kubeconfig! };
  const report: Array<{ family: IPFamily } & ReturnType<typeof compareModes>> = [];
  const skipped: string[] = [];
  for (const family of ['IPv4', 'IPv6'] as const) {
    let inputs: ModeInput[];
    try {
      inputs = [];
      for (const mode of modes as ModeDescriptor[]) inputs.push({ mode, ...(await loadSnapshot(source, family, mode.name)) });
    } catch (e) {
      skipped.push(`${family}: ${(e as Error).message ?? String(e)}`);
      continue;
    }
    try {
      report.push({ family, ...compareModes(inputs) });
    } catch (e) {
      err(`explain: failed: ${(e as Error).message ?? String(e)}\n`);
      return 1;
    }
  }
  if (report.length === 0) {
    err(`explain: nothing to compare: ${skipped.join('; ')}\n`);
    return 1;
  }
  for (const s of skipped) err(`explain: ${s}: not compared\n`);
  const differences = report.flatMap((r) => r.differences);
  const byDesign = report.flatMap((r) => r.byDesign);
  if (json) out(JSON.stringify({ modes: names, families: report }, null, 2) + '\n');
  else {
    const compared = report.map((r) => `${r.compared} ${r.family}`).join(' and ');
    if (differences.length === 0) out(`no unexpected differences between ${names.join(' and ')}: ${compared} service targets × clients traced\n`);
    else out(`${differences.length} unexpected differences between ${names.join(' and ')} (of ${compared} traced):\n${differences.map(formatDifference).join('\n')}\n`);
    if (byDesign.length > 0) {
      // Grouped by reason: each reason once, then the differences it explains.
      const reasons = [...new Set(byDesign.map((d) => d.reason))];
      out(`${byDesign.length} differences by design, as upstream:\n`);
      for (const r of reasons) out(`- ${r}:\n${byDesign.filter((d) => d.reason === r).map((d) => indent(formatDifference(d))).join('\n')}\n`);
    }
  }
  return differences.length === 0 ? 0 : 1;
}
