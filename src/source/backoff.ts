// Retry delays for the API server connection, shaped like client-go's reflector backoff:
// 800 ms, doubling per consecutive failure, capped at 30 s, with jitter, back to the start
// after a success. The jitter adds up to half the step (client-go adds up to a whole step):
// with that, the retry that spans an outage never sleeps longer than the outage has lasted
// so far, so a 10 s outage heals within 10 s of the server answering again.

export interface BackoffOptions {
  initialMs?: number;
  maxMs?: number;
  /** Fraction of the step added at random (0 ≤ jitter ≤ 1). Default 0.5. */
  jitter?: number;
  random?: () => number;
}

export class Backoff {
  private failures = 0;
  readonly initialMs: number;
  readonly maxMs: number;
  private readonly jitter: number;
  private readonly random: () => number;

  constructor(opts: BackoffOptions = {}) {
    this.initialMs = opts.initialMs ?? 800;
    this.maxMs = opts.maxMs ?? 30_000;
    this.jitter = opts.jitter ?? 0.5;
    this.random = opts.random ?? Math.random;
    if (!(this.initialMs > 0) || !(this.maxMs >= this.initialMs)) throw new Error('Backoff: need 0 < initialMs <= maxMs');
    if (!(this.jitter >= 0 && this.jitter <= 1)) throw new Error('Backoff: jitter must be within [0, 1]');
  }

  /** Consecutive failures since the last success. */
  get consecutiveFailures(): number {
    return this.failures;
  }

  /**
   * Records a failure and returns the delay before the next attempt. A server's
   * Retry-After is honoured, but never beyond the cap: a wrong or hostile header must not
   * leave the node without updates for longer than any other failure would.
   */
  next(retryAfterMs?: number): number {
    this.failures++;
    if (retryAfterMs !== undefined && retryAfterMs >= 0) return Math.min(this.maxMs, retryAfterMs);
    const step = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.failures - 1, 30));
    return Math.min(this.maxMs, step * (1 + this.jitter * this.random()));
  }

  reset(): void {
    this.failures = 0;
  }
}
