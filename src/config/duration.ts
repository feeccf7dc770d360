// Go time.Duration text form, as used by every duration field of KubeProxyConfiguration
// and by duration flags. Internally we count nanoseconds in a bigint so that values up to
// Go's int64 limit format exactly; callers get milliseconds.
import { ConfigError, showValue } from './errors.js';

const NS_PER_UNIT: Record<string, bigint> = {
  ns: 1n,
  us: 1_000n,
  'µs': 1_000n, // U+00B5 micro sign
  'μs': 1_000n, // U+03BC greek mu
  ms: 1_000_000n,
  s: 1_000_000_000n,
  m: 60_000_000_000n,
  h: 3_600_000_000_000n,
};

const MAX_NS = (1n << 63n) - 1n;

/** Parses a Go duration string ("1h30m", "1.5s", "-5m", "0") to nanoseconds. */
function durationError(text: unknown, why: string): ConfigError {
  return new ConfigError(`invalid duration ${showValue(text)}: ${why}`, undefined, text);
}

/** Parses a Go duration string ("1h30m", "1.5s", "-5m", "0") to nanoseconds. */
export function parseDurationNs(text: string): bigint {
  if (typeof text !== 'string') throw durationError(text, 'not a string');
  let s = text;
  let negative = false;
  if (s.startsWith('-') || s.startsWith('+')) {
    negative = s[0] === '-';
    s = s.slice(1);
  }
  if (s === '0') return 0n;
  if (s === '') throw durationError(text, 'empty');
  let total = 0n;
  const part = /^(\d*)(?:\.(\d*))?([a-zµμ]+)/;
  while (s.length > 0) {
    const m = part.exec(s);
    if (!m) throw durationError(text, 'expected a number followed by a unit (ns, us, ms, s, m, h)');
    const intPart = m[1] ?? '';
    const fracPart = m[2] ?? '';
    const unitName = m[3] ?? '';
    if (intPart === '' && fracPart === '') throw durationError(text, 'missing number');
    const unit = NS_PER_UNIT[unitName];
    if (unit === undefined) throw durationError(text, `unknown unit ${showValue(unitName)}`);
    let value = BigInt(intPart || '0') * unit;
    if (fracPart) {
      // Truncate toward zero like Go does for sub-nanosecond fractions.
      value += (BigInt(fracPart) * unit) / 10n ** BigInt(fracPart.length);
    }
    total += value;
    if (total > MAX_NS + (negative ? 1n : 0n)) throw durationError(text, 'out of range');
    s = s.slice(m[0].length);
  }
  return negative ? -total : total;
}

/** Parses a Go duration string to milliseconds (fractional for sub-millisecond values). */
export function parseDuration(text: string): number {
  const ns = parseDurationNs(text);
  const whole = ns / 1_000_000n;
  const rest = ns % 1_000_000n;
  return Number(whole) + Number(rest) / 1e6;
}

/** True when `text` is a valid Go duration. */
export function isDuration(text: unknown): text is string {
  if (typeof text !== 'string') return false;
  try {
    parseDurationNs(text);
    return true;
  } catch {
    return false;
  }
}

// "1.500" style fraction of `v` in units of `scale` with trailing zeros removed.
function fixed(v: bigint, scale: bigint): string {
  const intPart = v / scale;
  const frac = v % scale;
  if (frac === 0n) return intPart.toString();
  const digits = scale.toString().length - 1;
  const fracText = frac.toString().padStart(digits, '0').replace(/0+$/, '');
  return `${intPart}.${fracText}`;
}

/** Formats nanoseconds exactly as Go's time.Duration.String(). */
export function formatDurationNs(ns: bigint): string {
  if (ns === 0n) return '0s';
  const sign = ns < 0n ? '-' : '';
  const u = ns < 0n ? -ns : ns;
  if (u < 1_000n) return `${sign}${u}ns`;
  if (u < 1_000_000n) return `${sign}${fixed(u, 1_000n)}µs`;
  if (u < 1_000_000_000n) return `${sign}${fixed(u, 1_000_000n)}ms`;
  const hours = u / NS_PER_UNIT.h!;
  const minutes = (u % NS_PER_UNIT.h!) / NS_PER_UNIT.m!;
  const seconds = fixed(u % NS_PER_UNIT.m!, NS_PER_UNIT.s!);
  if (hours > 0n) return `${sign}${hours}h${minutes}m${seconds}s`;
  if (minutes > 0n) return `${sign}${minutes}m${seconds}s`;
  return `${sign}${seconds}s`;
}

/** Formats milliseconds as Go does (30000 → "30s", 60000 → "1m0s"). */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) {
    throw new ConfigError(`invalid duration ${showValue(ms)}: not a finite number of milliseconds`, undefined, ms);
  }
  const wholeMs = Math.trunc(ms);
  const subNs = Math.round((ms - wholeMs) * 1e6);
  return formatDurationNs(BigInt(wholeMs) * 1_000_000n + BigInt(subNs));
}

/** Rewrites a Go duration in its canonical form ("60s" → "1m0s"). */
export function normalizeDuration(text: string): string {
  return formatDurationNs(parseDurationNs(text));
}
