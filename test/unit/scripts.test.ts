// The set-up and test scripts a newcomer runs first: set-up says what it does and changes
// nothing outside the checkout; the test runner prints one line per file, the failures in full,
// hides passing files' logs, and leaves no temporary files.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { tempFiles } from '../support/tempfiles.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const { dir } = tempFiles('kpts-scripts-');

describe('scripts/setup.sh', () => {
  it('announces each step, builds, and neither links nor installs anything globally', () => {
    // npm stands in for itself: it records its arguments, so the real build is not redone here.
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    const calls = join(dir, 'npm-calls');
    writeFileSync(join(bin, 'npm'), `#!/bin/sh\necho "$*" >> ${calls}\n`);
    chmodSync(join(bin, 'npm'), 0o755);
    const res = spawnSync('bash', [join(ROOT, 'scripts/setup.sh')], { encoding: 'utf8', env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } });
    assert.equal(res.status, 0, res.stderr);
    assert.deepEqual(readFileSync(calls, 'utf8').trim().split('\n'), ['run --silent build']);
    assert.match(res.stderr, /^setup: building \(TypeScript to dist\/, about 10 s\)$/m);
    assert.match(res.stderr, /^setup: built; run it with: npx kube-proxy-ts --help$/m);
  });
});

describe('scripts/run-tests.mjs', { timeout: 60_000 }, () => {
  it('reports one line per file and the failure in full, without passing files\' logs or temporary files', () => {
    const project = join(dir, 'project');
    mkdirSync(join(project, 'dist/test/unit'), { recursive: true });
    mkdirSync(join(project, 'dist/test/e2e'), { recursive: true });
    mkdirSync(join(project, 'tmp'));
    writeFileSync(join(project, 'package.json'), '{"type": "module"}');
    const test = (body: string) => `import assert from 'node:assert/strict';\nimport { it } from 'node:test';\nimport { mkdtempSync } from 'node:fs';\nimport { tmpdir } from 'node:os';\nimport { join } from 'node:path';\n${body}\n`;
    writeFileSync(join(project, 'dist/test/unit/quiet.test.js'), test(`it('passes with a noisy log', () => { console.error('E0101 listen EADDRINUSE: address already in use'); mkdtempSync(join(tmpdir(), 'left-')); });`));
    writeFileSync(join(project, 'dist/test/unit/broken.test.js'), test(`it('compares', () => { console.error('the log before the failure'); assert.equal(1 + 1, 3); });`));
    writeFileSync(join(project, 'dist/test/e2e/kernel.test.js'), test(`it('runs alone', () => { mkdtempSync(join(tmpdir(), 'left-')); });`));
    const res = spawnSync(process.execPath, [join(ROOT, 'scripts/run-tests.mjs')], { cwd: project, encoding: 'utf8', env: { ...process.env, TMPDIR: join(project, 'tmp') } });
    assert.equal(res.status, 1);
    const lines = res.stdout.split('\n');
    assert.match(lines.find((l) => l.includes('unit/quiet.test.js')) ?? '', /^ok {4}unit\/quiet\.test\.js +1 passed +\d+\.\d s$/);
    assert.match(lines.find((l) => l.includes('unit/broken.test.js')) ?? '', /^FAIL {2}unit\/broken\.test\.js +0 passed, 1 failed +\d+\.\d s$/);
    assert.match(lines.find((l) => l.includes('e2e/kernel.test.js')) ?? '', /^ok {4}e2e\/kernel\.test\.js +1 passed/);
    assert.match(res.stdout, /^✗ compares$/m);
    assert.match(res.stdout, /2 !== 3/);
    assert.match(res.stdout, /│ the log before the failure/);
    assert.doesNotMatch(res.stdout + res.stderr, /EADDRINUSE/);
    assert.match(res.stdout, /^3 files, 3 tests: 2 passed, 1 failed, 0 skipped, 0 todo \(\d+\.\d s\)$/m);
    assert.ok(lines.length < 40, `a short report: ${lines.length} lines`);
    assert.deepEqual(readdirSync(join(project, 'tmp')), [], 'every temporary file is gone');
  });
});
