// Faults armed on the fake API server: each hits the next matching requests, dropping them,
// leaving them unanswered, or answering with an error Status.
import { matchesFilter, type RequestFilter, type RequestRecord } from './requests.js';

export type Fault =
  | { type: 'drop' }
  | { type: 'hang' }
  | { type: 'status'; status: number; reason: string; message: string; retryAfter?: number };

interface PendingFault {
  fault: Fault;
  remaining: number;
  filter: RequestFilter;
}

export class FaultQueue {
  private faults: PendingFault[] = [];

  add(fault: Fault, requests: number, filter: RequestFilter): void {
    this.faults.push({ fault, remaining: requests, filter });
  }

  /** The first armed fault the request matches, used up after its number of requests. */
  take(rec: RequestRecord): Fault | undefined {
    const i = this.faults.findIndex((f) => matchesFilter(rec, f.filter));
    if (i < 0) return undefined;
    const f = this.faults[i]!;
    if (--f.remaining <= 0) this.faults.splice(i, 1);
    return f.fault;
  }
}
