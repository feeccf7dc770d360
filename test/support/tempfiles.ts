// Config files written on the fly for tests, in one temporary directory removed after the file's tests.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';

export const CONFIG_HEADER = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n';

/** Returns a writer: each call writes `content` to a new file there and returns its path. */
export function tempFiles(prefix: string): { dir: string; write: (content: string, ext?: string) => string } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  after(() => rmSync(dir, { recursive: true, force: true }));
  let count = 0;
  return {
    dir,
    write: (content, ext = 'yaml') => {
      const path = join(dir, `cfg-${count++}.${ext}`);
      writeFileSync(path, content);
      return path;
    },
  };
}
