import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { linesOfFile } from '../../src/node/pieces.js';

function linesOf(text: string): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'kpt-lines-'));
  try {
    const path = join(dir, 'f');
    writeFileSync(path, text);
    const fd = openSync(path, 'r');
    try {
      return [...linesOfFile(fd)];
    } finally {
      closeSync(fd);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('lines of a file come out whole across reads: multi-byte characters on a boundary, a line longer than a read, no final newline', () => {
  const lines: string[] = [];
  // Lines of varied length so that read boundaries fall everywhere, some inside 'é' (2 bytes) and '✓' (3 bytes).
  for (let i = 0; i < 60_000; i++) lines.push(`-A KUBE-SEP-${i} ${'é✓x'.repeat(i % 17)} rule ${i}`);
  lines.push('y'.repeat(3 * (1 << 20) + 5));
  lines.push('', 'after an empty line', 'last, without a newline');
  assert.deepEqual(linesOf(lines.join('\n')), lines);
});

test('an empty file has no lines; a final newline ends the last line', () => {
  assert.deepEqual(linesOf(''), []);
  assert.deepEqual(linesOf('a\nb\n'), ['a', 'b']);
});
