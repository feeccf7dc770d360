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
 * Prepares the node for a proxy that programs the kernel; false (after one error line per
 * problem) when it cannot run. A dry run touches nothing.
 */
export async function prepareNode(config: KubeProxyConfiguration, dryRun: boolean): Promise<boolean> {
  const mode = effectiveMode(config);
  if (dryRun) return true;
  const problems = await startupProblems(mode);
  for (const p of problems) log.error(p);
  if (problems.length > 0) return false;
  applyOomScoreAdj(config.oomScoreAdj);
  applySysctls(desiredSysctls(nodeSettingsOf(config)));
  return true;
}
