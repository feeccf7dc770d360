// A backend wrapped to add a step around some of its methods: every method the wrapper does
// not replace is the inner backend's own (an optional one only when the inner backend has it).
import type { Backend } from '../types.js';

type Overrides = Partial<Pick<Backend, 'sync' | 'cleanup' | 'stop' | 'carriedTraffic'>>;

export function decorate(inner: Backend, overrides: Overrides): Backend {
  const wrapped: Backend = {
    mode: inner.mode,
    family: inner.family,
    sync: overrides.sync ?? ((s) => inner.sync(s)),
    cleanup: overrides.cleanup ?? (() => inner.cleanup()),
  };
  if (inner.describe) wrapped.describe = () => inner.describe!();
  if (inner.kernelInSync) wrapped.kernelInSync = () => inner.kernelInSync!();
  if (inner.verify) wrapped.verify = (stopping) => inner.verify!(stopping);
  const stop = overrides.stop ?? (inner.stop && ((removeRules: boolean) => inner.stop!(removeRules)));
  if (stop) wrapped.stop = stop;
  const carried = overrides.carriedTraffic ?? (inner.carriedTraffic && (() => inner.carriedTraffic!()));
  if (carried) wrapped.carriedTraffic = carried;
  return wrapped;
}
