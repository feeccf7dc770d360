// Writes a kubeconfig file that points at a (fake) API server, so tests reach it the same
// way the proxy reaches a real cluster.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';

export interface KubeconfigOptions {
  /** Bearer token for the user entry. */
  token?: string;
  /** An exec credential plugin instead of a static token. */
  exec?: { command: string; args?: string[]; env?: Array<{ name: string; value: string }> };
  /** Directory to write into; a fresh temporary directory by default. */
  dir?: string;
}

// Directories this module created, removed when the test process exits (each test file is one).
const created: string[] = [];
process.once('exit', () => {
  for (const dir of created) rmSync(dir, { recursive: true, force: true });
});

/** Writes the kubeconfig and returns its path (in a temporary directory removed at exit, unless `dir` is given). */
export function kubeconfigFor(server: { url: string } | string, opts: KubeconfigOptions = {}): string {
  const url = typeof server === 'string' ? server : server.url;
  const user: Record<string, unknown> = {};
  if (opts.token !== undefined) user.token = opts.token;
  if (opts.exec) {
    user.exec = {
      apiVersion: 'client.authentication.k8s.io/v1',
      command: opts.exec.command,
      args: opts.exec.args ?? [],
      env: opts.exec.env ?? null,
      interactiveMode: 'Never',
    };
  }
  const doc = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'fake', cluster: { server: url } }],
    users: [{ name: 'fake-user', user }],
    contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'fake-user' } }],
    'current-context': 'fake',
  };
  let dir = opts.dir;
  if (dir === undefined) {
    dir = mkdtempSync(join(tmpdir(), 'kpts-kubeconfig-'));
    created.push(dir);
  }
  const path = join(dir, 'kubeconfig');
  writeFileSync(path, stringify(doc), { mode: 0o600 });
  return path;
}
