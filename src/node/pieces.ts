// Large texts (a whole nftables table, a restart checkpoint, a save of the iptables rules) produced
// in small pieces and written out as they come, or read back a line at a time, so that the whole
// text is never held at once.
import { closeSync, openSync, readSync, rmSync, writeSync } from 'node:fs';

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

/**
 * The lines of an open file (without their newlines), read a megabyte at a time into one buffer.
 * A line's bytes are decoded only once it is whole, so a character split between two reads is
 * never cut; decoding each line from the bytes took a third of the time of decoding each piece
 * and splitting the text. A number passed to next() skips that many bytes after the line just
 * given, undecoded.
 */
export function* linesOfFile(fd: number): Generator<string, void, number | undefined> {
  // One buffer for the whole file: the unfinished line of a read moves to its start and the next
  // read goes after it. (A new buffer for each read left a 34 MB save's worth of dead memory
  // outside the heap until V8's next full collection.)
  let buf = Buffer.allocUnsafe(1 << 20);
  let kept = 0;
  let skip = 0;
  for (;;) {
    if (kept === buf.length) {
      const bigger = Buffer.allocUnsafe(buf.length * 2);
      buf.copy(bigger, 0, 0, kept);
      buf = bigger;
    }
    const n = readSync(fd, buf, kept, buf.length - kept, null);
    if (n <= 0) break;
    const filled = buf.subarray(0, kept + n);
    let start = Math.min(skip, filled.length);
    skip -= start;
    // The kept bytes hold no line end: the search starts after them.
    let from = Math.max(start, kept);
    for (let nl = filled.indexOf(0x0a, from); nl >= 0; nl = filled.indexOf(0x0a, from)) {
      const asked = yield filled.toString('utf8', start, nl);
      start = nl + 1;
      if (asked) {
        const here = Math.min(asked, filled.length - start);
        start += here;
        skip = asked - here;
      }
      from = start;
    }
    kept = filled.length - start;
    buf.copyWithin(0, start, filled.length);
  }
  if (kept > 0) yield buf.toString('utf8', 0, kept);
}
