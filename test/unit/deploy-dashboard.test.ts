// deploy/grafana-dashboard.json imports into Grafana and shows data: every query names only
// metrics the proxy serves (in some mode), groups by labels those metrics carry, and every
// legend names a label the query keeps. The migration guide points operators to it.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { PROXY_MODE_NAMES } from '../../src/backend/modes.js';
import { ProxyMetrics } from '../../src/server/metrics.js';
import { registerWatchFreshness } from '../../src/server/watch-metrics.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8');

interface Target {
  expr: string;
  legendFormat?: string;
  refId: string;
  datasource?: { type: string; uid: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { type: string; uid: string };
  targets?: Target[];
}
interface Variable {
  name: string;
  type: string;
  query: unknown;
  datasource?: { uid: string };
}
interface Dashboard {
  schemaVersion: number;
  title: string;
  uid: string;
  templating: { list: Variable[] };
  panels: Panel[];
}

/** name → type and labels of every metric the proxy may serve, in any mode. */
function servedMetrics(): Map<string, { type: string; labels: string[] }> {
  const out = new Map<string, { type: string; labels: string[] }>();
  for (const mode of PROXY_MODE_NAMES) {
    const metrics = new ProxyMetrics({ mode });
    registerWatchFreshness(metrics.registry, { lastActivity: () => new Map() });
    for (const m of metrics.registry.getMetricsAsArray()) {
      out.set(m.name, { type: String(m.type), labels: (m as unknown as { labelNames?: string[] }).labelNames ?? [] });
    }
  }
  return out;
}

/** Labels every scrape adds, so any query may group by them. */
const TARGET_LABELS = ['instance', 'job'];
const KEYWORDS = new Set(['and', 'or', 'unless', 'offset', 'bool', 'on', 'ignoring', 'group_left', 'group_right', 'inf', 'nan']);

/** The metric names, selector labels and grouping labels of a PromQL expression. */
function parseExpr(expr: string): { metrics: string[]; selectorLabels: string[]; groupLabels: string[] } {
  let e = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  const selectorLabels: string[] = [];
  e = e.replace(/\{([^}]*)\}/g, (_m, body: string) => {
    for (const l of body.matchAll(/([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)/g)) selectorLabels.push(l[1]!);
    return ' ';
  });
  e = e.replace(/\[[^\]]*\]/g, ' ');
  const groupLabels: string[] = [];
  e = e.replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g, (_m, body: string) => {
    groupLabels.push(...body.split(',').map((s) => s.trim()).filter(Boolean));
    return ' ';
  });
  const metrics = [...e.matchAll(/(?<![\w:.$])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()/g)].map((m) => m[1]!).filter((n) => !KEYWORDS.has(n.toLowerCase()));
  return { metrics, selectorLabels, groupLabels };
}

describe('deploy/grafana-dashboard.json', () => {
  const dash = JSON.parse(read('deploy/grafana-dashboard.json')) as Dashboard;
  const served = servedMetrics();
  const queryPanels = dash.panels.filter((p) => p.type !== 'row');

  it('parses the PromQL it checks', () => {
    const p = parseExpr('histogram_quantile(0.99, sum by (ip_family, le) (rate(a_b_bucket{instance=~"$x"}[$__rate_interval]))) - on (x) time()');
    assert.deepEqual(p, { metrics: ['a_b_bucket'], selectorLabels: ['instance'], groupLabels: ['ip_family', 'le', 'x'] });
  });

  it('is an importable dashboard with a Prometheus data source variable and an instance variable', () => {
    assert.ok(dash.schemaVersion >= 36, `schemaVersion ${dash.schemaVersion}`);
    assert.ok(dash.title && dash.uid);
    const vars = new Map(dash.templating.list.map((v) => [v.name, v]));
    assert.equal(vars.get('datasource')?.type, 'datasource');
    assert.equal(vars.get('datasource')?.query, 'prometheus');
    assert.equal(vars.get('instance')?.type, 'query');
    assert.equal(vars.get('instance')?.datasource?.uid, '${datasource}');
    const ids = dash.panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
    const cells = new Set<string>();
    for (const p of dash.panels) {
      assert.ok(p.gridPos.x >= 0 && p.gridPos.x + p.gridPos.w <= 24, `${p.title} fits the 24-column grid`);
      for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
        for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
          assert.ok(!cells.has(`${x},${y}`), `${p.title} overlaps another panel`);
          cells.add(`${x},${y}`);
        }
      }
    }
    for (const p of queryPanels) {
      assert.equal(p.datasource?.uid, '${datasource}', `${p.title} uses the chosen data source`);
      assert.ok(p.targets && p.targets.length > 0, `${p.title} has queries`);
      for (const t of p.targets) {
        assert.equal(t.datasource?.uid, '${datasource}');
        assert.match(t.expr, /\{instance=~"\$instance"\}/, `${p.title}: ${t.expr} follows the instance variable`);
      }
    }
  });

  it('queries only metrics the proxy serves, grouped by labels they carry, with legends from kept labels', () => {
    const used = new Set<string>();
    for (const p of queryPanels) {
      for (const t of p.targets!) {
        const where = `${p.title}: ${t.expr}`;
        const parsed = parseExpr(t.expr);
        assert.ok(parsed.metrics.length > 0, `${where} names a metric`);
        const labels = new Set(TARGET_LABELS);
        for (const name of parsed.metrics) {
          const suffix = /_(bucket|count|sum)$/.exec(name)?.[1];
          const base = suffix && !served.has(name) ? name.slice(0, -suffix.length - 1) : name;
          const metric = served.get(base);
          assert.ok(metric, `${where}: ${name} is served`);
          if (base !== name) assert.equal(metric.type, 'histogram', `${where}: ${name} belongs to a histogram`);
          if (suffix === 'bucket' && base !== name) labels.add('le');
          for (const l of metric.labels) labels.add(l);
          used.add(base);
        }
        for (const l of [...parsed.groupLabels, ...parsed.selectorLabels]) assert.ok(labels.has(l), `${where}: label ${l} exists`);
        const kept = parsed.groupLabels.length > 0 ? new Set(parsed.groupLabels) : labels;
        for (const m of (t.legendFormat ?? '').matchAll(/\{\{\s*(\w+)\s*\}\}/g)) {
          assert.ok(kept.has(m[1]!), `${where}: legend label ${m[1]} is kept by the query`);
        }
      }
    }
    // The figures the dashboard exists for.
    for (const name of [
      'kubeproxy_sync_proxy_rules_duration_seconds',
      'kubeproxy_sync_full_proxy_rules_duration_seconds',
      'kubeproxy_sync_partial_proxy_rules_duration_seconds',
      'kubeproxy_sync_proxy_rules_nftables_sync_failures_total',
      'kubeproxy_sync_proxy_rules_iptables_restore_failures_total',
      'kubeproxy_sync_proxy_rules_repairs_total',
      'kubeproxy_sync_proxy_rules_endpoint_changes_pending',
      'kubeproxy_sync_proxy_rules_service_changes_pending',
      'kubeproxy_sync_proxy_rules_endpoint_changes_total',
      'kubeproxy_sync_proxy_rules_service_changes_total',
      'kubeproxy_sync_proxy_rules_no_local_endpoints_total',
      'kubeproxy_conntrack_reconciler_deleted_entries_total',
      'kubeproxy_conntrack_reconciler_sync_duration_seconds',
      'kubeproxy_proxy_healthz_total',
      'kubeproxy_network_programming_duration_seconds',
    ]) {
      assert.ok(used.has(name), `a panel shows ${name}`);
    }
  });

  it('the sync duration and programming latency panels show p50 and p99 through histogram_quantile', () => {
    const exprs = queryPanels.flatMap((p) => p.targets!.map((t) => t.expr));
    for (const name of ['kubeproxy_sync_proxy_rules_duration_seconds', 'kubeproxy_network_programming_duration_seconds']) {
      for (const q of ['0.5', '0.99']) {
        assert.ok(
          exprs.some((e) => e.startsWith(`histogram_quantile(${q},`) && e.includes(`${name}_bucket`)),
          `p${Number(q) * 100} of ${name}`,
        );
      }
    }
  });

  it('docs/migrating.md tells operators how to import it', () => {
    const doc = read('docs/migrating.md');
    assert.match(doc, /^## Dashboard$/m);
    assert.ok(doc.includes('deploy/grafana-dashboard.json'));
  });
});
