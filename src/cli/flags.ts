// Command line of kube-proxy-ts: upstream kube-proxy's flags (pflag syntax) plus our own.
// The effective configuration is: config file (if --config) → upstream defaults → flags
// that were given explicitly → validation.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ConfigError,
  ConfigErrors,
  appendPortIfNeeded,
  applyDefaults,
  DEFAULT_HEALTHZ_PORT,
  DEFAULT_METRICS_PORT,
  normalizeDuration,
  readConfigFile,
  showValue,
  validateConfiguration,
  withSource,
  type PartialConfiguration,
} from '../config/index.js';
import type { KubeProxyConfiguration, LocalMode, ProxyMode } from '../config/types.js';

export interface CommandLine {
  /** File (if --config) + defaults + flag overrides, validated. */
  config: KubeProxyConfiguration;
  /** --config ('' if unset). */
  configFile: string;
  /** --master ('' if unset). */
  master: string;
  /** --manifests DIR ('' if unset): standalone source. */
  manifestsDir: string;
  cleanup: boolean;
  dryRun: boolean;
  /** --watch: a dry run keeps running and prints each sync's changes. */
  watch: boolean;
  /** --init-only: the privileged node set-up (sysctls, oom_score_adj), then exit. */
  initOnly: boolean;
  /** --vmodule: per-file verbosity, `pattern=N,...` ('' if unset). */
  vmodule: string;
  /** Names of the flags given explicitly (without dashes). */
  given: ReadonlySet<string>;
  writeConfigTo: string;
  version: boolean;
  help: boolean;
  /** --v, or logging.verbosity of the config file. */
  verbosity: number;
}

type Kind = 'string' | 'bool' | 'int' | 'float' | 'duration' | 'list' | 'mapBool';
type Value = string | boolean | number | string[] | Record<string, boolean>;

interface FlagSpec {
  name: string;
  kind: Kind;
  usage: string;
  /** Default as shown in --help ('' for none). */
  def: string;
  /** Configuration fields this flag sets (used to point validation errors at the flag). */
  fields?: string[];
  /** Fields checked against this flag's value (cross-field rules): errors there mention the flag. */
  related?: string[];
  apply?: (c: KubeProxyConfiguration, v: Value) => void;
}

const str = (v: Value): string => v as string;
const num = (v: Value): number => v as number;
const bool = (v: Value): boolean => v as boolean;

const FLAGS: FlagSpec[] = [
  { name: 'config', kind: 'string', def: '', usage: 'Path to a KubeProxyConfiguration file (YAML or JSON). Flags given explicitly override it.' },
  { name: 'write-config-to', kind: 'string', def: '', usage: 'Write the effective configuration to this file and exit.' },
  { name: 'cleanup', kind: 'bool', def: 'false', usage: 'Remove all rules this proxy may have programmed, then exit (with --dry-run: only list them).' },
  { name: 'init-only', kind: 'bool', def: 'false', usage: 'Do the privileged node set-up (sysctls, oom_score_adj), then exit: for an init container.' },
  { name: 'master', kind: 'string', def: '', usage: 'Address of the Kubernetes API server (overrides any value in kubeconfig).' },
  {
    name: 'kubeconfig', kind: 'string', def: '', fields: ['clientConnection.kubeconfig'],
    usage: 'Path to a kubeconfig file with authorization information (falls back to $KUBECONFIG, then in-cluster config).',
    apply: (c, v) => { c.clientConnection.kubeconfig = str(v); },
  },
  {
    name: 'kube-api-content-type', kind: 'string', def: 'application/vnd.kubernetes.protobuf', fields: ['clientConnection.contentType'],
    usage: 'Content type of requests sent to the API server.',
    apply: (c, v) => { c.clientConnection.contentType = str(v); },
  },
  {
    name: 'kube-api-qps', kind: 'float', def: '5', fields: ['clientConnection.qps'],
    usage: 'QPS to use while talking with the API server.',
    apply: (c, v) => { c.clientConnection.qps = num(v); },
  },
  {
    name: 'kube-api-burst', kind: 'int', def: '10', fields: ['clientConnection.burst'],
    usage: 'Burst to use while talking with the API server.',
    apply: (c, v) => { c.clientConnection.burst = num(v); },
  },
  {
    name: 'proxy-mode', kind: 'string', def: 'iptables', fields: ['mode'],
    usage: "Which proxy mode to use: 'iptables', 'nftables', 'ipvs' or 'userspace'; blank means iptables.",
    apply: (c, v) => { c.mode = str(v) as ProxyMode | ''; },
  },
  {
    name: 'hostname-override', kind: 'string', def: '', fields: ['hostnameOverride'],
    usage: 'If non-empty, use this name to identify the node instead of the actual hostname.',
    apply: (c, v) => { c.hostnameOverride = str(v); },
  },
  {
    name: 'cluster-cidr', kind: 'string', def: '', fields: ['clusterCIDR'],
    usage: 'CIDR range(s) of pods in the cluster, comma-separated (at most one per IP family); used to detect local traffic.',
    apply: (c, v) => { c.clusterCIDR = str(v); },
  },
  {
    name: 'masquerade-all', kind: 'bool', def: 'false', fields: ['iptables.masqueradeAll', 'nftables.masqueradeAll'],
    usage: 'SNAT all traffic sent via Service cluster IPs (iptables and nftables modes).',
    apply: (c, v) => { c.iptables.masqueradeAll = bool(v); c.nftables.masqueradeAll = bool(v); },
  },
  {
    name: 'nodeport-addresses', kind: 'list', def: '[]', fields: ['nodePortAddresses'],
    usage: "Comma-separated CIDRs of node addresses that accept NodePort traffic, or 'primary' for the node's primary IPs; empty means all.",
    apply: (c, v) => { c.nodePortAddresses = v as string[]; },
  },
  {
    name: 'detect-local-mode', kind: 'string', def: 'ClusterCIDR', fields: ['detectLocalMode'],
    related: ['detectLocal.bridgeInterface', 'detectLocal.interfaceNamePrefix'],
    usage: 'How to detect local traffic: ClusterCIDR, NodeCIDR, BridgeInterface or InterfaceNamePrefix.',
    apply: (c, v) => { c.detectLocalMode = str(v) as LocalMode | ''; },
  },
  {
    name: 'pod-bridge-interface', kind: 'string', def: '', fields: ['detectLocal.bridgeInterface'],
    usage: 'Bridge interface name; traffic from it is local (with --detect-local-mode=BridgeInterface).',
    apply: (c, v) => { c.detectLocal.bridgeInterface = str(v); },
  },
  {
    name: 'pod-interface-name-prefix', kind: 'string', def: '', fields: ['detectLocal.interfaceNamePrefix'],
    usage: 'Interface name prefix; traffic from matching interfaces is local (with --detect-local-mode=InterfaceNamePrefix).',
    apply: (c, v) => { c.detectLocal.interfaceNamePrefix = str(v); },
  },
  {
    name: 'bind-address', kind: 'string', def: '0.0.0.0', fields: ['bindAddress'],
    usage: "IP address to serve on ('0.0.0.0' for all IPv4 interfaces, '::' for all IPv6 interfaces).",
  },
  {
    name: 'bind-address-hard-fail', kind: 'bool', def: 'false', fields: ['bindAddressHardFail'],
    usage: 'Treat failure to bind a port as fatal.',
    apply: (c, v) => { c.bindAddressHardFail = bool(v); },
  },
  {
    name: 'healthz-bind-address', kind: 'string', def: '0.0.0.0:10256', fields: ['healthzBindAddress'],
    usage: 'IP address and port of the health check server (port 10256 if omitted); empty disables it.',
    apply: (c, v) => { c.healthzBindAddress = appendPortIfNeeded(str(v), DEFAULT_HEALTHZ_PORT); },
  },
  {
    name: 'metrics-bind-address', kind: 'string', def: '127.0.0.1:10249', fields: ['metricsBindAddress'],
    usage: 'IP address and port of the metrics server (port 10249 if omitted); empty disables it.',
    apply: (c, v) => { c.metricsBindAddress = appendPortIfNeeded(str(v), DEFAULT_METRICS_PORT); },
  },
  {
    name: 'iptables-sync-period', kind: 'duration', def: '30s', fields: ['iptables.syncPeriod', 'nftables.syncPeriod'],
    related: ['iptables.minSyncPeriod', 'nftables.minSyncPeriod'],
    usage: 'Maximum interval between full rule resyncs (iptables and nftables modes), e.g. 5s, 1m, 2h22m; must be > 0.',
    apply: (c, v) => { c.iptables.syncPeriod = str(v); c.nftables.syncPeriod = str(v); },
  },
  {
    name: 'iptables-min-sync-period', kind: 'duration', def: '1s', fields: ['iptables.minSyncPeriod', 'nftables.minSyncPeriod'],
    usage: 'Minimum interval between rule syncs as Services and endpoints change (iptables and nftables modes).',
    apply: (c, v) => { c.iptables.minSyncPeriod = str(v); c.nftables.minSyncPeriod = str(v); },
  },
  {
    name: 'iptables-masquerade-bit', kind: 'int', def: '14', fields: ['iptables.masqueradeBit', 'nftables.masqueradeBit'],
    usage: 'Bit of the packet mark used to request SNAT (iptables and nftables modes); 0-31.',
    apply: (c, v) => { c.iptables.masqueradeBit = num(v); c.nftables.masqueradeBit = num(v); },
  },
  {
    name: 'iptables-localhost-nodeports', kind: 'bool', def: 'true', fields: ['iptables.localhostNodePorts'],
    usage: 'Accept NodePort connections on localhost (iptables mode, IPv4 only).',
    apply: (c, v) => { c.iptables.localhostNodePorts = bool(v); },
  },
  {
    name: 'ipvs-scheduler', kind: 'string', def: 'rr', fields: ['ipvs.scheduler'],
    usage: 'IPVS scheduler: rr, wrr, lc, wlc, lblc, lblcr, sh, dh, sed, nq or mh.',
    apply: (c, v) => { c.ipvs.scheduler = str(v); },
  },
  {
    name: 'ipvs-sync-period', kind: 'duration', def: '30s', fields: ['ipvs.syncPeriod'],
    related: ['ipvs.minSyncPeriod'],
    usage: 'Maximum interval between full IPVS resyncs; must be > 0.',
    apply: (c, v) => { c.ipvs.syncPeriod = str(v); },
  },
  {
    name: 'ipvs-min-sync-period', kind: 'duration', def: '0s', fields: ['ipvs.minSyncPeriod'],
    usage: 'Minimum interval between IPVS syncs as Services and endpoints change.',
    apply: (c, v) => { c.ipvs.minSyncPeriod = str(v); },
  },
  {
    name: 'ipvs-strict-arp', kind: 'bool', def: 'false', fields: ['ipvs.strictARP'],
    usage: 'Set arp_ignore=1 and arp_announce=2 (IPVS mode).',
    apply: (c, v) => { c.ipvs.strictARP = bool(v); },
  },
  {
    name: 'ipvs-exclude-cidrs', kind: 'list', def: '[]', fields: ['ipvs.excludeCIDRs'],
    usage: 'Comma-separated CIDRs IPVS cleanup must not touch.',
    apply: (c, v) => { c.ipvs.excludeCIDRs = v as string[]; },
  },
  {
    name: 'ipvs-tcp-timeout', kind: 'duration', def: '0s', fields: ['ipvs.tcpTimeout'],
    usage: 'Timeout of idle IPVS TCP connections; 0 leaves it as is.',
    apply: (c, v) => { c.ipvs.tcpTimeout = str(v); },
  },
  {
    name: 'ipvs-tcpfin-timeout', kind: 'duration', def: '0s', fields: ['ipvs.tcpFinTimeout'],
    usage: 'Timeout of IPVS TCP connections after a FIN; 0 leaves it as is.',
    apply: (c, v) => { c.ipvs.tcpFinTimeout = str(v); },
  },
  {
    name: 'ipvs-udp-timeout', kind: 'duration', def: '0s', fields: ['ipvs.udpTimeout'],
    usage: 'Timeout of IPVS UDP flows; 0 leaves it as is.',
    apply: (c, v) => { c.ipvs.udpTimeout = str(v); },
  },
  {
    name: 'conntrack-max-per-core', kind: 'int', def: '32768', fields: ['conntrack.maxPerCore'],
    usage: 'Maximum conntrack entries per CPU core (0 leaves the limit as is and ignores --conntrack-min).',
    apply: (c, v) => { c.conntrack.maxPerCore = num(v); },
  },
  {
    name: 'conntrack-min', kind: 'int', def: '131072', fields: ['conntrack.min'],
    usage: 'Minimum conntrack entries to allocate, regardless of --conntrack-max-per-core.',
    apply: (c, v) => { c.conntrack.min = num(v); },
  },
  {
    name: 'conntrack-tcp-timeout-established', kind: 'duration', def: '24h0m0s', fields: ['conntrack.tcpEstablishedTimeout'],
    usage: 'Idle timeout of established TCP connections (0 leaves it as is).',
    apply: (c, v) => { c.conntrack.tcpEstablishedTimeout = str(v); },
  },
  {
    name: 'conntrack-tcp-timeout-close-wait', kind: 'duration', def: '1h0m0s', fields: ['conntrack.tcpCloseWaitTimeout'],
    usage: 'NAT timeout of TCP connections in CLOSE_WAIT (0 leaves it as is).',
    apply: (c, v) => { c.conntrack.tcpCloseWaitTimeout = str(v); },
  },
  {
    name: 'conntrack-tcp-be-liberal', kind: 'bool', def: 'false', fields: ['conntrack.tcpBeLiberal'],
    usage: 'Mark only out-of-window RST packets as INVALID (nf_conntrack_tcp_be_liberal).',
    apply: (c, v) => { c.conntrack.tcpBeLiberal = bool(v); },
  },
  {
    name: 'conntrack-udp-timeout', kind: 'duration', def: '0s', fields: ['conntrack.udpTimeout'],
    usage: 'Idle timeout of UNREPLIED UDP flows (0 leaves it as is).',
    apply: (c, v) => { c.conntrack.udpTimeout = str(v); },
  },
  {
    name: 'conntrack-udp-timeout-stream', kind: 'duration', def: '0s', fields: ['conntrack.udpStreamTimeout'],
    usage: 'Idle timeout of ASSURED UDP flows (0 leaves it as is).',
    apply: (c, v) => { c.conntrack.udpStreamTimeout = str(v); },
  },
  {
    name: 'config-sync-period', kind: 'duration', def: '15m0s', fields: ['configSyncPeriod'],
    usage: 'How often configuration from the API server is refreshed; must be > 0.',
    apply: (c, v) => { c.configSyncPeriod = str(v); },
  },
  {
    name: 'oom-score-adj', kind: 'int', def: '-999', fields: ['oomScoreAdj'],
    usage: 'oom_score_adj of the proxy process, in [-1000, 1000].',
    apply: (c, v) => { c.oomScoreAdj = num(v); },
  },
  {
    name: 'proxy-port-range', kind: 'string', def: '', fields: ['portRange'],
    usage: 'Host port range (begin-end or begin+offset) the userspace proxy may use; empty means any.',
    apply: (c, v) => { c.portRange = str(v); },
  },
  {
    name: 'profiling', kind: 'bool', def: 'false', fields: ['enableProfiling'],
    usage: 'Serve /debug/pprof/ on the metrics address: CPU profiles (.cpuprofile) and heap snapshots (.heapsnapshot).',
    apply: (c, v) => { c.enableProfiling = bool(v); },
  },
  {
    name: 'show-hidden-metrics-for-version', kind: 'string', def: '', fields: ['showHiddenMetricsForVersion'],
    usage: 'Previous minor version (e.g. 1.29) whose hidden metrics to show.',
    apply: (c, v) => { c.showHiddenMetricsForVersion = str(v); },
  },
  {
    name: 'feature-gates', kind: 'mapBool', def: '', fields: ['featureGates'],
    usage: 'Feature gates as key=value pairs, e.g. Gate1=true,Gate2=false (merged over the config file).',
    apply: (c, v) => { Object.assign(c.featureGates, v as Record<string, boolean>); },
  },
  {
    name: 'logging-format', kind: 'string', def: 'text', fields: ['logging.format'],
    usage: 'Log format: text or json.',
    apply: (c, v) => { c.logging.format = str(v); },
  },
  {
    name: 'log-flush-frequency', kind: 'duration', def: '5s', fields: ['logging.flushFrequency'],
    usage: 'Maximum time between log flushes.',
    apply: (c, v) => { c.logging.flushFrequency = str(v); },
  },
  {
    name: 'log-text-split-stream', kind: 'bool', def: 'false', fields: ['logging.options.text.splitStream'],
    usage: 'In text format, write informational lines to stdout and warnings and errors to stderr.',
    apply: (c, v) => { c.logging.options = { ...c.logging.options, text: { ...(c.logging.options.text as object | undefined), splitStream: bool(v) } }; },
  },
  {
    name: 'vmodule', kind: 'string', def: '',
    usage: 'Per-file verbosity as pattern=N,... (pattern: a source file name without extension, * and ? allowed), e.g. proxy=4.',
  },
  {
    name: 'v', kind: 'int', def: '0', fields: ['logging.verbosity'],
    usage: 'Log verbosity: messages of level <= N are shown.',
    apply: (c, v) => { c.logging.verbosity = num(v); },
  },
  { name: 'manifests', kind: 'string', def: '', usage: 'Read Services and EndpointSlices from this directory of YAML/JSON manifests instead of an API server.' },
  { name: 'dry-run', kind: 'bool', def: 'false', usage: 'Print the rules that would be programmed, then exit 0, touching nothing (no kernel change, no port bound).' },
  { name: 'watch', kind: 'bool', def: 'false', usage: 'With --dry-run: keep running and print each later sync\'s changes.' },
  { name: 'version', kind: 'bool', def: 'false', usage: 'Print the version and exit.' },
  { name: 'help', kind: 'bool', def: 'false', usage: 'Print this help and exit.' },
];

const BY_NAME = new Map(FLAGS.map((f) => [f.name, f]));

/** The commands besides running the proxy; each has its own --help. */
export const SUBCOMMANDS: Record<string, string> = {
  explain: 'Trace a packet through the rules the proxy would program: which rule matches, which endpoint answers.',
  sandbox: 'Run the proxy on an example cluster in network namespaces on this machine, and check it forwards.',
};
const SHORTHANDS: Record<string, string> = { h: 'help', v: 'v' };

function badValue(flag: string, raw: string, reason: string): ConfigError {
  return new ConfigError(`invalid value ${showValue(raw)} for flag --${flag}: ${reason}`, `--${flag}`, raw, reason);
}

// Go strconv.ParseBool.
function parseBool(flag: string, raw: string): boolean {
  if (['1', 't', 'T', 'true', 'TRUE', 'True'].includes(raw)) return true;
  if (['0', 'f', 'F', 'false', 'FALSE', 'False'].includes(raw)) return false;
  throw badValue(flag, raw, 'must be true or false');
}

function convert(spec: FlagSpec, raw: string, previous: Value | undefined): Value {
  switch (spec.kind) {
    case 'string':
      return raw;
    case 'bool':
      return parseBool(spec.name, raw);
    case 'int': {
      const n = Number(raw);
      if (!/^[+-]?\d+$/.test(raw) || n < -2147483648 || n > 2147483647) {
        throw badValue(spec.name, raw, 'must be a 32-bit integer');
      }
      return n;
    }
    case 'float': {
      const n = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(n)) throw badValue(spec.name, raw, 'must be a number');
      return n;
    }
    case 'duration':
      try {
        return normalizeDuration(raw);
      } catch {
        throw badValue(spec.name, raw, 'must be a duration such as 30s, 1m0s or 500ms');
      }
    case 'list': {
      // Repeating a list flag appends, as pflag's string slices do.
      const items = raw === '' ? [] : raw.split(',').map((s) => s.trim());
      return [...((previous as string[] | undefined) ?? []), ...items];
    }
    case 'mapBool': {
      const out: Record<string, boolean> = { ...((previous as Record<string, boolean> | undefined) ?? {}) };
      for (const pair of raw.split(',')) {
        const item = pair.trim();
        if (item === '') continue;
        const eq = item.indexOf('=');
        if (eq <= 0) throw badValue(spec.name, raw, `${showValue(item)} is not of the form Name=true|false`);
        const key = item.slice(0, eq).trim();
        const val = item.slice(eq + 1).trim();
        if (!['true', 'false', '1', '0', 't', 'f', 'T', 'F', 'TRUE', 'FALSE', 'True', 'False'].includes(val)) {
          throw badValue(spec.name, raw, `value of ${key} must be true or false, got ${showValue(val)}`);
        }
        out[key] = parseBool(spec.name, val);
      }
      return out;
    }
  }
}

/** Splits argv (without node and script) into explicitly given flag values. */
function scan(argv: string[]): Map<string, Value> {
  const given = new Map<string, Value>();
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    let name: string;
    let inline: string | undefined;
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      inline = eq < 0 ? undefined : arg.slice(eq + 1);
      if (!BY_NAME.has(name)) throw new ConfigError(`unknown flag: --${name}${didYouMean(name, [...BY_NAME.keys()], '--')}`, `--${name}`);
    } else if (arg.startsWith('-') && arg.length > 1) {
      // pflag shorthands: -h, -v 2, -v=2, -v2.
      const short = arg[1]!;
      const long = SHORTHANDS[short];
      if (long === undefined) throw new ConfigError(`unknown shorthand flag: ${showValue(short)} in ${arg}`, arg);
      name = long;
      const rest = arg.slice(2);
      inline = rest === '' ? undefined : rest.startsWith('=') ? rest.slice(1) : rest;
    } else {
      positional.push(arg);
      continue;
    }
    const spec = BY_NAME.get(name)!;
    let raw: string;
    if (inline !== undefined) {
      raw = inline;
    } else if (spec.kind === 'bool') {
      raw = 'true';
    } else {
      const next = argv[i + 1];
      // A following long flag is never a value; a negative number is (--oom-score-adj -999).
      if (next === undefined || next.startsWith('--')) {
        throw new ConfigError(`flag needs an argument: --${name}`, `--${name}`);
      }
      raw = next;
      i++;
    }
    given.set(name, convert(spec, raw, given.get(name)));
  }
  if (positional.length > 0) {
    const arg = positional[0]!;
    const hint = didYouMean(arg, Object.keys(SUBCOMMANDS), 'kube-proxy-ts ');
    throw new ConfigError(
      hint !== ''
        ? `unknown command ${showValue(arg)}${hint}`
        : `unexpected argument ${showValue(arg)}: kube-proxy-ts takes no positional arguments; its commands are ${Object.keys(SUBCOMMANDS).join(', ')}`,
      undefined,
      arg,
    );
  }
  return given;
}

/** --vmodule's `pattern=N,...`: each pattern a file name glob, each N a non-negative level. */
export function parseVmodule(text: string): { pattern: string; level: number }[] {
  return text
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '')
    .map((item) => {
      const m = /^([^=]+)=(\d+)$/.exec(item);
      if (!m) throw badValue('vmodule', text, `${showValue(item)} is not of the form pattern=N`);
      return { pattern: m[1]!.trim(), level: Number(m[2]) };
    });
}

/** Levenshtein distance, for suggesting the name a typo meant. */
function distance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) next.push(Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1)));
    row = next;
  }
  return row[b.length]!;
}

/** `; did you mean "X"?` for the nearest candidate within a few edits, else ''. */
export function didYouMean(typed: string, candidates: string[], prefix = ''): string {
  let best = '';
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = distance(typed.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  return bestDistance <= Math.max(1, Math.floor(typed.length / 3)) ? `; did you mean ${showValue(prefix + best)}?` : '';
}

/** Points a validation error at the flag that set the field, or at the config file. */
function attribute(e: unknown, given: Map<string, Value>, configFile: string): unknown {
  if (e instanceof ConfigErrors) {
    const problems = e.problems.map((p) => attribute(p, given, '') as ConfigError);
    const fromFile = configFile !== '' && problems.some((p) => p.field === undefined || !p.field.startsWith('--'));
    return new ConfigErrors(problems, fromFile ? `config file ${showValue(configFile)}: ` : '');
  }
  if (!(e instanceof ConfigError) || e.field === undefined) return e;
  const field = e.field.replace(/\[\d+\]$/, '');
  for (const spec of FLAGS) {
    if (given.has(spec.name) && spec.fields?.some((f) => field === f || field.startsWith(`${f}.`))) {
      const where = field === e.field ? '' : ` (${e.field})`;
      return new ConfigError(
        `invalid value ${showValue(e.value)} for flag --${spec.name}${where}: ${e.reason ?? e.message}`,
        `--${spec.name}`,
        e.value,
        e.reason,
      );
    }
  }
  const related = FLAGS.find((spec) => given.has(spec.name) && spec.related?.includes(field));
  const hinted = related
    ? new ConfigError(`${e.message} (see flag --${related.name}=${showValue(given.get(related.name))})`, e.field, e.value, e.reason)
    : e;
  return configFile === '' ? hinted : withSource(hinted, configFile);
}

function firstPath(list: string | undefined): string {
  return (list ?? '').split(':').find((p) => p !== '') ?? '';
}

/**
 * Parses the command line (`argv` without node and the script). With --help or --version
 * the config file is not read and `config` holds the defaults.
 */
export function parseCommandLine(argv: string[], env: NodeJS.ProcessEnv = process.env): CommandLine {
  const given = scan(argv);
  const get = <T extends Value>(name: string, def: T): T => (given.has(name) ? (given.get(name) as T) : def);
  const help = get('help', false);
  const version = get('version', false);
  const configFile = get('config', '');

  let config: KubeProxyConfiguration;
  if (help || version) {
    config = applyDefaults({});
  } else {
    const partial: PartialConfiguration = configFile === '' ? {} : readConfigFile(configFile);
    // bindAddress goes in before defaulting: the default healthz/metrics hosts follow its family.
    if (given.has('bind-address')) partial.bindAddress = get('bind-address', '');
    try {
      config = applyDefaults(partial);
    } catch (e) {
      throw configFile === '' ? e : withSource(e, configFile);
    }
    for (const spec of FLAGS) {
      if (spec.apply && given.has(spec.name)) spec.apply(config, given.get(spec.name)!);
    }
    const master = get('master', '');
    if (config.clientConnection.kubeconfig === '' && master === '') {
      config.clientConnection.kubeconfig = firstPath(env.KUBECONFIG);
    }
    try {
      validateConfiguration(config);
    } catch (e) {
      throw attribute(e, given, configFile);
    }
  }

  if (get('watch', false) && !get('dry-run', false)) {
    throw new ConfigError('--watch only works with --dry-run (a running proxy already follows every change)', '--watch');
  }
  if (given.has('vmodule')) parseVmodule(get('vmodule', ''));
  return {
    config,
    configFile,
    master: get('master', ''),
    manifestsDir: get('manifests', ''),
    cleanup: get('cleanup', false),
    dryRun: get('dry-run', false),
    watch: get('watch', false),
    initOnly: get('init-only', false),
    vmodule: get('vmodule', ''),
    given: new Set(given.keys()),
    writeConfigTo: get('write-config-to', ''),
    version,
    help,
    verbosity: config.logging.verbosity,
  };
}

/** Usage text listing every flag with its default and a one-line description. */
export function helpText(): string {
  const lines = [
    'kube-proxy-ts: Kubernetes node proxy (nftables, iptables, IPVS), compatible with kube-proxy.',
    '',
    'Usage: kube-proxy-ts [flags]              run the proxy',
    '       kube-proxy-ts COMMAND [flags]      run a command; kube-proxy-ts COMMAND -h lists its flags',
    '',
    'Commands:',
    ...Object.entries(SUBCOMMANDS).map(([name, what]) => `  ${name.padEnd(10)}${what}`),
    '',
    'Flags (both --flag value and --flag=value; booleans also --flag=false):',
  ];
  const typeName: Record<Kind, string> = {
    string: 'string', bool: '', int: 'int', float: 'float', duration: 'duration', list: 'strings', mapBool: 'key=bool,...',
  };
  const heads = FLAGS.map((f) => {
    const short = Object.entries(SHORTHANDS).find(([, long]) => long === f.name)?.[0];
    return `  ${short ? `-${short}, ` : '    '}--${f.name}${typeName[f.kind] ? ` ${typeName[f.kind]}` : ''}`;
  });
  const width = Math.max(...heads.map((h) => h.length)) + 2;
  FLAGS.forEach((f, i) => {
    const def = f.def !== '' && f.def !== 'false' ? ` (default ${f.def})` : '';
    lines.push(`${heads[i]!.padEnd(width)}${f.usage}${def}`);
  });
  return lines.join('\n') + '\n';
}

// Version of the installed package: the nearest package.json above this module.
function readVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version?: unknown };
      if (typeof pkg.version === 'string') return pkg.version;
    } catch {
      // No (readable) package.json here: keep walking up.
    }
    const parent = dirname(dir);
    if (parent === dir) return '0.0.0-unknown';
    dir = parent;
  }
}

export const VERSION: string = readVersion();
