// Judging and printing the sandbox checks. One line per check:
//   ok   default/web  clusterIP  10.96.0.10:80/tcp  from client (10.244.1.250)  30/30 answered: web-a 11, web-b 19
// then `(...)` remarks, and for a failure `; expected: ...`.
import type { Check, Skip } from './plan.js';
import type { ProbeResult } from './probe.js';

export interface Verdict {
  ok: boolean;
  /** Why the result is what it is, when that is not obvious from the answers. */
  remark?: string;
}

function total(counts: Record<string, number | undefined>): number {
  return Object.values(counts).reduce<number>((a, b) => a + (b ?? 0), 0);
}

/** `27/30 answered: web-a 12, web-b 15; 3 timeout` */
export function formatAnswers(r: ProbeResult): string {
  const pods = Object.entries(r.answered).sort(([a], [b]) => a.localeCompare(b));
  let text = `${total(r.answered)}/${r.sent} answered`;
  if (pods.length > 0) text += `: ${pods.map(([p, n]) => `${p} ${n}`).join(', ')}`;
  const failures = Object.entries(r.failures).filter(([, n]) => (n ?? 0) > 0);
  if (failures.length > 0) text += `; ${failures.map(([k, n]) => `${n} ${k}`).join(', ')}`;
  return text;
}

/** Whether the answers are what the check expects. */
export function judge(c: Check, r: ProbeResult): Verdict {
  const answeredBy = Object.keys(r.answered).filter((p) => (r.answered[p] ?? 0) > 0);
  const failed = total(r.failures);
  if (c.noAnswer !== undefined) return { ok: answeredBy.length === 0, remark: c.noAnswer };
  const strangers = answeredBy.filter((p) => !c.expected.includes(p));
  const sticky = c.sticky ? 'session affinity: one pod answers every request' : undefined;
  if (strangers.length > 0) return { ok: false, remark: `not an endpoint: ${strangers.join(', ')}` };
  if (c.sticky && answeredBy.length > 1) return { ok: false, remark: sticky };
  if (c.unreachable.length > 0) {
    // Requests the unreachable pods got fail; every other answer must still come from an endpoint.
    const reachable = c.expected.filter((p) => !c.unreachable.includes(p));
    const ok = reachable.length === 0 || c.sticky || answeredBy.length > 0;
    return { ok, remark: `br_netfilter not loaded: ${c.unreachable.join(', ')} cannot answer a pod on its own node` };
  }
  if (failed > 0) return { ok: false, ...(sticky ? { remark: sticky } : {}) };
  if (c.sticky) return { ok: answeredBy.length === 1, remark: sticky! };
  const missing = c.expected.filter((p) => !answeredBy.includes(p));
  if (missing.length > 0) return { ok: false, remark: `no answer from ${missing.join(', ')}` };
  return { ok: true };
}

export interface Widths {
  service: number;
  kind: number;
  target: number;
  from: number;
}

function target(c: Check): string {
  return `${c.ip}:${c.port}/${c.proto}`;
}

function from(c: Check): string {
  return `from ${c.from} (${c.fromIp})`;
}

export function widths(checks: Check[], skips: Skip[]): Widths {
  const max = (xs: string[]): number => xs.reduce((m, x) => Math.max(m, x.length), 0);
  return {
    service: max([...checks.map((c) => c.service), ...skips.map((s) => s.service)]),
    kind: max(checks.map((c) => c.kind)),
    target: max(checks.map(target)),
    from: max(checks.map(from)),
  };
}

export function formatCheck(c: Check, r: ProbeResult, v: Verdict, w: Widths): string {
  let line = `${v.ok ? 'ok  ' : 'FAIL'} ${c.service.padEnd(w.service)}  ${c.kind.padEnd(w.kind)}  ${target(c).padEnd(w.target)}  ${from(c).padEnd(w.from)}  ${formatAnswers(r)}`;
  if (v.remark) line += `  (${v.remark})`;
  if (!v.ok) line += `; expected: ${c.noAnswer !== undefined || c.expected.length === 0 ? 'no answer' : c.expected.join(', ')}`;
  return line;
}

export function formatSkip(s: Skip, w: Widths): string {
  return `--   ${s.service.padEnd(w.service)}  ${s.reason}`;
}
