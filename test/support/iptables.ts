// Running iptables tools inside a test's network namespace, and the hooks of a rendered ruleset
// as iptables-restore input.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { jumpRules, renderContext } from '../../src/backend/iptables/render.js';
import type { BackendConfig } from '../../src/backend/types.js';

export type Flavour = 'legacy' | 'nft';

/** `iptables-nft-restore`, `ip6tables-legacy-save`, `iptables-nft`, ... */
export function tool(flavour: Flavour, v6: boolean, what: 'restore' | 'save' | ''): string {
  return `${v6 ? 'ip6tables' : 'iptables'}-${flavour}${what ? '-' + what : ''}`;
}

/** Runs a command in the namespace; fails the test, showing stderr and input, when it fails. */
export function run(ns: string, argv: string[], input?: string): string {
  const r = spawnSync('ip', ['netns', 'exec', ns, ...argv], { input, encoding: 'utf8' });
  assert.equal(r.status, 0, `${argv.join(' ')} failed: ${r.stderr}\n${input ?? ''}`);
  return r.stdout;
}

/** The rules that hook our chains into the built-in ones, appended. */
export function hooksInput(config: BackendConfig): string {
  const out: string[] = [];
  for (const table of ['filter', 'nat'] as const) {
    out.push(`*${table}`);
    for (const j of jumpRules(renderContext(config))) if (j.table === table) out.push(`-A ${j.chain} ${j.rule}`);
    out.push('COMMIT');
  }
  return out.join('\n') + '\n';
}
