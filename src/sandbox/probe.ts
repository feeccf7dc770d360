// Client side of the sandbox checks: sends requests to a service address and counts which pod
// answered. Sending and reading one request is request.ts; this file runs the requests of a job.
import { requestOnce, runLimited, validateTarget, type Proto, type RequestError } from './request.js';

export type { Proto };

/** A failed request as the client sees it: refused (RST / ICMP port unreachable), timeout (dropped), other. */
export type ProbeFailure = 'refused' | 'timeout' | 'unreachable' | 'error';

export interface ProbeJob {
  proto: Proto;
  ip: string;
  port: number;
  count: number;
  /** Requests in flight at once; 1 makes requests strictly one after another. */
  concurrency: number;
  timeoutMs: number;
}

export interface ProbeResult {
  sent: number;
  /** Answers per pod name. */
  answered: Record<string, number>;
  /** Failures per kind. */
  failures: Partial<Record<ProbeFailure, number>>;
}

const MAX_COUNT = 10_000;

// The probe report keeps to the coarse kinds; the rest count as plain errors.
const FAILURE: Record<RequestError, ProbeFailure> = {
  refused: 'refused',
  timeout: 'timeout',
  unreachable: 'unreachable',
  reset: 'error',
  closed: 'error',
  error: 'error',
};

/** Checks a job read from outside; returns the problem or undefined. */
export function validateJob(job: unknown): string | undefined {
  if (typeof job !== 'object' || job === null) return 'job must be an object';
  const j = job as Partial<ProbeJob>;
  const bad = validateTarget(j);
  if (bad) return bad;
  if (!Number.isInteger(j.count) || j.count! < 1 || j.count! > MAX_COUNT) return `count must be 1..${MAX_COUNT}`;
  if (!Number.isInteger(j.concurrency) || j.concurrency! < 1) return 'concurrency must be a positive integer';
  if (!Number.isInteger(j.timeoutMs) || j.timeoutMs! < 1) return 'timeoutMs must be a positive integer';
  return undefined;
}

/** Sends job.count requests and counts the answers per pod. */
export async function probe(job: ProbeJob): Promise<ProbeResult> {
  const problem = validateJob(job);
  if (problem) throw new Error(`probe: ${problem}`);
  const result: ProbeResult = { sent: job.count, answered: {}, failures: {} };
  await runLimited(job.count, job.concurrency, async () => {
    const r = await requestOnce(job);
    if (r.ok) result.answered[r.pod] = (result.answered[r.pod] ?? 0) + 1;
    else result.failures[FAILURE[r.error]] = (result.failures[FAILURE[r.error]] ?? 0) + 1;
  });
  return result;
}
