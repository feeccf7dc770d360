import type { IPFamily, Snapshot } from '../model/types.js';

export type DetectLocalMode = 'ClusterCIDR' | 'NodeCIDR' | 'BridgeInterface' | 'InterfaceNamePrefix';

/** What a backend needs from the configuration, already resolved for one IP family. */
export interface BackendConfig {
  family: IPFamily;
  masqueradeAll: boolean;
  /** Bit of the packet mark used to request masquerade (upstream: 14 → 0x4000). */
  masqueradeBit: number;
  detectLocalMode: DetectLocalMode;
  /** CIDRs of this family for ClusterCIDR / NodeCIDR detection (empty: no local detection). */
  localCIDRs: string[];
  bridgeInterface: string;
  interfaceNamePrefix: string;
  /** nodePortAddresses of this family: CIDRs, or 'primary'. Empty means upstream's default for the mode. */
  nodePortAddresses: string[];
  /** The node's IPs of this family (primary first), used to resolve NodePort addresses. */
  nodeIPs: string[];
  /** iptables mode, IPv4: NodePorts also answer on 127.0.0.1 (needs route_localnet). Default true. */
  localhostNodePorts?: boolean;
  /** IPVS mode: the `ipvs` section of the configuration. */
  ipvs?: {
    scheduler: string;
    excludeCIDRs: string[];
    strictARP: boolean;
    /** ipvsadm --set timeouts in seconds (0: the kernel's). */
    tcpSec: number;
    tcpFinSec: number;
    udpSec: number;
  };
  /** The in-process proxy (userspace mode, localhost NodePorts in nftables mode). */
  userspaceProxy?: {
    /** Ports its listeners may use; absent: any free port. */
    portRange?: { min: number; max: number };
    udpIdleTimeoutMs: number;
    /** nftables mode: NodePorts also answer on 127.0.0.1 / ::1 through it (nodePortAddresses `localhost`). */
    localhostNodePorts: boolean;
  };
}

/** What the in-process proxy of a backend has carried, for metrics. */
export interface CarriedTraffic {
  /** `userspace` (the userspace mode's listeners) or `localhost-nodeports` (nftables mode). */
  purpose: 'userspace' | 'localhost-nodeports';
  /** TCP connections and UDP sessions taken from clients since start. */
  accepted: number;
  /** Clients turned away because every endpoint tried failed. */
  refused: number;
  activeConnections: number;
  udpSessions: number;
  bytesIn: number;
  bytesOut: number;
}

/** What one verification of the kernel against the last written ruleset found and repaired. */
export interface VerifyResult {
  /** Items (elements, rules, chains, sets, tables) that differed and were rewritten; 0 when all matched. */
  repaired: number;
  /** Short descriptions of the differences, for the log. */
  differences: string[];
  /**
   * Not verified yet: what the verification needs (a monitor loading the ruleset) is not ready,
   * and waiting for it would hold every change queued behind the sync. Verify again once this settles.
   */
  retry?: Promise<unknown>;
}

export interface SyncResult {
  /** Number of kernel operations sent (rules / elements / commands), for tests and metrics. */
  operations: number;
  /** True when the whole ruleset was replaced. */
  full: boolean;
}

/**
 * A kernel backend for one IP family. `sync` renders (pure) and applies (thin). A failed
 * apply throws and must leave the previously applied rules in place; the runner retries.
 */
export interface Backend {
  readonly mode: string;
  readonly family: IPFamily;
  sync(snapshot: Snapshot): Promise<SyncResult>;
  /** Remove everything this backend ever programmed. */
  cleanup(): Promise<void>;
  /**
   * Called when the proxy stops (`removeRules` true) or when a new backend of the same mode took
   * over after a configuration change (false: the rules are the new backend's now). Kernel
   * backends leave it out: their rules keep serving while the proxy restarts. A backend whose
   * data plane is this process closes it here, and on stopping removes its rules too.
   */
  stop?(removeRules: boolean): Promise<void>;
  /** Counters of the connections this process carries itself (userspace mode, localhost NodePorts). */
  carriedTraffic?(): CarriedTraffic | undefined;
  /**
   * Per service key, the ports of this process's listeners that answer the service's redirected
   * traffic (userspace mode): conntrack entries answered by them are not stale.
   */
  conntrackReplyPorts?(): ReadonlyMap<string, readonly number[]>;
  /** Human-readable dump of what is currently programmed (for dry-run and debugging). */
  describe?(): string;
  /**
   * False while the backend knows the kernel holds rules other than the ones it wrote
   * (found by verification, or a failed apply) and has not repaired them yet; health
   * reports it. A backend that cannot tell leaves this out.
   */
  kernelInSync?(): boolean;
  /**
   * Compares the kernel with what this backend last wrote and rewrites only what differs.
   * Called once per syncPeriod, after a sync; throws when the repair fails (the next call
   * tries again). Once `stopping` is aborted (the proxy stops and does not wait for a read-back),
   * nothing found is repaired. Backends that cannot read their rules back leave this out.
   */
  verify?(stopping?: AbortSignal): Promise<VerifyResult>;
}
