// A throwaway network namespace for tests that touch the kernel: added before the tests of the
// file or suite that asks for it and deleted after them, also when a test fails.
import { execFileSync } from 'node:child_process';
import { after, before } from 'node:test';

export interface TestNetns {
  name: string;
  /** Command prefix that runs a program inside the namespace (ExecOptions.wrap). */
  wrap: string[];
}

/** Registers the add/delete hooks in the current scope; name carries the caller's own prefix. */
export function useNetns(name: string): TestNetns {
  before(() => execFileSync('ip', ['netns', 'add', name]));
  after(() => execFileSync('ip', ['netns', 'del', name]));
  return { name, wrap: ['ip', 'netns', 'exec', name] };
}
