import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { linesOfFile } from '../../src/node/pieces.js';

/** The lines of `text` as read from a file; `skipAfter` says how many bytes to skip after a line. */
function linesOf(text: string, skipAfter?: (line: string) => number | undefined): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'kpt-lines-'));
  try {
    const path = join(dir, 'f');
    writeFileSync(path, text);
    const fd = openSync(path, 'r');
    try {
      const out: string[] = [];
      const lines = linesOfFile(fd);
      for (let next = lines.next(); !next.done; next = lines.next(skipAfter?.(next.value))) out.push(next.value);
      return out;
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

test('bytes skipped after a line are not read as lines: within a read, across reads, up to the end', () => {
  // Blocks of lines, each after a head line that gives the block's length in bytes.
  const blocks: string[][] = [];
  for (let b = 0; b < 40; b++) blocks.push(Array.from({ length: b * 997 }, (_, i) => `é${b}.${i}${'x'.repeat(i % 13)}`));
  const text = blocks.map((block, b) => `head ${b} ${Buffer.byteLength(block.map((l) => `${l}\n`).join(''))}\n${block.map((l) => `${l}\n`).join('')}`).join('') + 'tail';
  const skipped = linesOf(text, (line) => (line.startsWith('head ') && Number(line.split(' ')[1]) % 2 === 0 ? Number(line.split(' ')[2]) : undefined));
  const expected = blocks.flatMap((block, b) => [`head ${b} ${Buffer.byteLength(block.map((l) => `${l}\n`).join(''))}`, ...(b % 2 === 0 ? [] : block)]);
  assert.deepEqual(skipped, [...expected, 'tail']);
  // Skipping past the end ends the lines.
  assert.deepEqual(linesOf('a\nbc\nd', (line) => (line === 'a' ? 100 : undefined)), ['a']);
});
