// The file half of a restart checkpoint, shared by the backends that keep one: a proxy that stops
// cleanly writes what it last programmed to a file (and a marker with the same token into the
// kernel); the next start takes the file, removing it, so that a checkpoint is trusted at most
// once. What a file holds and how its marker looks is each backend's own.
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, renameSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { gathered, linesOfFile, writeFileInPieces } from '../../node/pieces.js';

/** A checkpoint's token: its file and its marker in the kernel carry the same one. */
export const newToken = (): string => randomBytes(8).toString('hex');

/**
 * Writes a checkpoint's lines atomically (a reader never sees half a file), as they are produced:
 * built whole, a 10,000-service checkpoint and its copy as bytes were the stopping proxy's highest
 * memory of all.
 */
export function writeCheckpointFile(path: string, lines: Iterable<string>): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileInPieces(tmp, gathered(lines));
  renameSync(tmp, path);
}

/** Removes a checkpoint that was not read. */
export function dropCheckpointFile(path: string): void {
  rmSync(path, { force: true });
}

/**
 * Removes the checkpoint at `path` and hands its lines (see linesOfFile) to `read`; undefined when
 * there is none, an error when it cannot be read (a start then reads the kernel as usual).
 */
export function takeCheckpointFile<T>(path: string, read: (lines: Generator<string, void, number | undefined>) => T | { error: string }): T | { error: string } | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    // A missing checkpoint is no checkpoint.
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    rmSync(path, { force: true });
    return { error: `unreadable checkpoint: ${(e as Error).message}` };
  }
  try {
    rmSync(path, { force: true });
    return read(linesOfFile(fd));
  } catch (e) {
    return { error: `unreadable checkpoint: ${(e as Error).message}` };
  } finally {
    closeSync(fd);
  }
}
