// The node-agent side of start-up: checks that the mode can work here, then the process's
// oom_score_adj and the kernel settings of the proxy's network namespace.
import { effectiveMode, parseDuration } from '../config/index.js';
import type { KubeProxyConfiguration } from '../config/types.js';
import { log } from '../log.js';
import { startupProblems } from '../node/checks.js';
import { applyOomScoreAdj } from '../node/oom.js';
import { applySysctls, desiredSysctls, type NodeSettings } from '../node/sysctl.js';

export function nodeSettingsOf(config: KubeProxyConfiguration): NodeSettings {
  const ct = config.conntrack;
  const sec = (d: string): number => Math.floor(parseDuration(d) / 1000);
  return {
    conntrackMaxPerCore: ct.maxPerCore,
    conntrackMin: ct.min,
    tcpEstablishedTimeoutSec: sec(ct.tcpEstablishedTimeout),
    tcpCloseWaitTimeoutSec: sec(ct.tcpCloseWaitTimeout),
    tcpBeLiberal: ct.tcpBeLiberal,
    udpTimeoutSec: sec(ct.udpTimeout),
    udpStreamTimeoutSec: sec(ct.udpStreamTimeout),
    routeLocalnet: effectiveMode(config) === 'iptables' && config.iptables.localhostNodePorts,
  };
}

/**
 * Whether the node can run a proxy that programs the kernel (root, the mode's tools); false after
 * one error line per problem. Changes nothing. A dry run needs nothing.
 */
export async function nodeUsable(config: KubeProxyConfiguration, dryRun: boolean): Promise<boolean> {
  if (dryRun) return true;
  const problems = await startupProblems(effectiveMode(config));
  for (const p of problems) log.error(p);
  return problems.length === 0;
}

/** Sets the proxy's OOM score and the node's sysctls. A dry run touches nothing. */
export function prepareNode(config: KubeProxyConfiguration, dryRun: boolean): void {
  if (dryRun) return;
  applyOomScoreAdj(config.oomScoreAdj);
  applySysctls(desiredSysctls(nodeSettingsOf(config)));
}
