// Errors of API server requests: HTTP statuses with their Status reason, Retry-After, 410 Gone
// and stalls, as the reflector needs to tell them apart.
import type { KubeResponse } from './kubeclient.js';

/** A failed request or watch; `gone` means the resourceVersion expired and a relist is needed. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly code?: number,
    readonly gone = false,
    readonly retryAfterMs?: number,
    /** A watch went silent: replace it and relist. */
    readonly stalled = false,
  ) {
    super(message);
  }
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseRetryAfter(v: string | string[] | undefined): number | undefined {
  const s = Array.isArray(v) ? v[0] : v;
  if (!s) return undefined;
  const secs = Number(s);
  if (Number.isFinite(secs) && secs >= 0) return secs * 1000;
  const date = Date.parse(s);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

// A non-success response, turned into an ApiError carrying the Status reason when there is one.
export async function responseError(res: KubeResponse, what: string): Promise<ApiError> {
  let message = '';
  let reason = '';
  try {
    const text = await res.body.text();
    try {
      const st = JSON.parse(text) as unknown;
      if (isObject(st)) {
        message = typeof st.message === 'string' ? st.message : '';
        reason = typeof st.reason === 'string' ? st.reason : '';
      }
    } catch {
      message = text.slice(0, 200);
    }
  } catch {
    // The body could not be read; the status code alone has to do.
  }
  const detail = [reason, message].filter((s) => s !== '').join(': ');
  return new ApiError(
    `${what}: HTTP ${res.status}${detail ? ` (${detail})` : ''}`,
    res.status,
    res.status === 410,
    parseRetryAfter(res.headers['retry-after']),
  );
}

export function describe(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as { cause?: unknown }).cause;
    const code = (err as { code?: unknown }).code;
    let s = err.message || err.name;
    if (typeof code === 'string' && !s.includes(code)) s += ` (${code})`;
    if (cause instanceof Error && cause.message && !s.includes(cause.message)) s += `: ${cause.message}`;
    return s;
  }
  return String(err);
}
