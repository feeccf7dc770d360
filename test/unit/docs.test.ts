// The documentation a kube-proxy user looks for exists and stays true: every metric the proxy
// serves is in docs/metrics.md (and nothing else is), the pages the README links to exist, the
// licence matches package.json, and package.json ships only what exists.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { PROXY_MODE_NAMES } from '../../src/backend/modes.js';
import { ProxyMetrics } from '../../src/server/metrics.js';
import { registerWatchFreshness } from '../../src/server/watch-metrics.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8');

/** name → "type | labels" of every metric the proxy may serve, in any mode. */
function servedMetrics(): Map<string, string> {
  const out = new Map<string, string>();
  for (const mode of PROXY_MODE_NAMES) {
    const metrics = new ProxyMetrics({ mode });
    registerWatchFreshness(metrics.registry, { lastActivity: () => new Map() });
    for (const m of metrics.registry.getMetricsAsArray()) {
      const labels = ((m as unknown as { labelNames?: string[] }).labelNames ?? []).join(', ');
      out.set(m.name, `${m.type} | ${labels}`);
    }
  }
  return out;
}

describe('documentation', () => {
  it('docs/metrics.md lists exactly the kubeproxy_ metrics served, with their types and labels', () => {
    const documented = new Map<string, string>();
    for (const m of read('docs/metrics.md').matchAll(/^\| `(kubeproxy_\w+)` \| (\w+) \|([^|]*)\|/gm)) {
      documented.set(m[1]!, `${m[2]} | ${m[3]!.replaceAll('`', '').trim()}`);
    }
    const served = servedMetrics();
    const own = new Map([...served].filter(([name]) => name.startsWith('kubeproxy_')));
    assert.deepEqual(Object.fromEntries([...documented].sort()), Object.fromEntries([...own].sort()));
    const others = [...served.keys()].filter((n) => !n.startsWith('kubeproxy_'));
    assert.deepEqual(others.filter((n) => !/^(process|nodejs)_/.test(n)), [], 'every other metric is a process_ or nodejs_ one');
    assert.match(read('docs/metrics.md'), /`process_\*`/);
    assert.match(read('docs/metrics.md'), /`nodejs_\*`/);
  });

  it('the modes and troubleshooting pages show the commands that look at each mode', () => {
    const modes = read('docs/modes.md');
    for (const cmd of ['nft list table ip kube-proxy', 'iptables-save | grep KUBE', 'ipvsadm -Ln']) assert.ok(modes.includes(cmd), `modes.md shows ${cmd}`);
    for (const mode of PROXY_MODE_NAMES) assert.match(modes, new RegExp(`^## ${mode}`, 'm'));
    const troubleshooting = read('docs/troubleshooting.md');
    for (const needle of ['kube-proxy-ts explain', '/debug/pprof/profile?seconds=', '--dry-run', 'sandbox --cleanup', '--cleanup --dry-run']) {
      assert.ok(troubleshooting.includes(needle), `troubleshooting.md covers ${needle}`);
    }
  });

  it('every docs/ link of the README resolves', () => {
    const links = [...read('README.md').matchAll(/\]\((docs\/[^)#]+)/g)].map((m) => m[1]!);
    assert.ok(links.length >= 5, `the README links its pages: ${links.join(' ')}`);
    for (const link of links) assert.ok(existsSync(join(ROOT, link)), `${link} exists`);
  });

  it('LICENSE is the Apache License 2.0 package.json names, and package.json ships only what exists', () => {
    const pkg = JSON.parse(read('package.json')) as { license: string; files: string[] };
    assert.equal(pkg.license, 'Apache-2.0');
    assert.match(read('LICENSE'), /Apache License\s+Version 2\.0, January 2004/);
    for (const f of pkg.files) assert.ok(existsSync(join(ROOT, f)), `package.json files: ${f} exists`);
  });

  it('no file holds an unresolved merge conflict', () => {
    const marker = /^(<{7} |={7}$|>{7} )/m;
    const conflicted: string[] = [];
    const walk = (dir: string): void => {
      for (const entry of readdirSync(join(ROOT, dir), { withFileTypes: true })) {
        const path = dir === '' ? entry.name : `${dir}/${entry.name}`;
        if (entry.isDirectory()) {
          if (!['node_modules', 'dist', '.git'].includes(entry.name)) walk(path);
        } else if (/\.(ts|mjs|js|md|ya?ml|json|sh|service)$|^Dockerfile$/.test(entry.name) && marker.test(read(path))) {
          conflicted.push(path);
        }
      }
    };
    walk('');
    assert.deepEqual(conflicted, []);
  });
});
