// Every flag of kube-proxy-ts: upstream kube-proxy's (names, defaults, the configuration fields
// they set) plus our own. flags.ts parses the command line with this table.
import { appendPortIfNeeded, DEFAULT_HEALTHZ_PORT, DEFAULT_METRICS_PORT } from '../config/index.js';
import type { KubeProxyConfiguration, LocalMode, ProxyMode } from '../config/types.js';

export type Kind = 'string' | 'bool' | 'int' | 'float' | 'duration' | 'list' | 'mapBool';
export type Value = string | boolean | number | string[] | Record<string, boolean>;

export interface FlagSpec {
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

export const FLAGS: FlagSpec[] = [
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
    usage: 'Host port range (begin-end or begin+offset) the userspace proxy may use; empty means free ports of the ephemeral range (net.ipv4.ip_local_port_range).',
    apply: (c, v) => { c.portRange = str(v); },
  },
  {
    name: 'udp-timeout', kind: 'duration', def: '250ms', fields: ['udpIdleTimeout'],
    usage: 'How long an idle UDP session is kept open (userspace mode), e.g. 250ms, 2s; must be > 0.',
    apply: (c, v) => { c.udpIdleTimeout = str(v); },
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
