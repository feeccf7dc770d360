// Assertion shared by the config and flag tests: a ConfigError whose message names what was wrong.
import assert from 'node:assert/strict';
import { ConfigError } from '../../src/config/index.js';

/** Asserts fn throws a ConfigError whose message contains every needle. */
export function throwsConfigError(fn: () => unknown, ...needles: string[]): ConfigError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof ConfigError, `expected ConfigError, got ${String(caught)}`);
  for (const n of needles) assert.ok(caught.message.includes(n), `message ${JSON.stringify(caught.message)} lacks ${JSON.stringify(n)}`);
  return caught;
}
