// Large texts (a whole nftables table, a restart checkpoint) produced in small pieces and written
// out as they come, so that the whole text is never held at once.
import { closeSync, openSync, rmSync, writeSync } from 'node:fs';

/** Small pieces gathered into pieces of at least `chars` characters (the last may be shorter). */
export function* gathered(pieces: Iterable<string>, chars = 1 << 18): Generator<string> {
  let part = '';
  for (const p of pieces) {
    part += p;
    if (part.length >= chars) {
      yield part;
      part = '';
    }
  }
  if (part) yield part;
}

/** Writes the pieces to a new file (mode 0600); a failure leaves no partial file. */
export function writeFileInPieces(path: string, pieces: Iterable<string>): void {
  const fd = openSync(path, 'w', 0o600);
  try {
    for (const p of pieces) writeSync(fd, p);
  } catch (e) {
    closeSync(fd);
    rmSync(path, { force: true });
    throw e;
  }
  closeSync(fd);
}
