// Incremental decoder of a Kubernetes list response (`{"metadata": {...}, "items": [...]}`).
// A 10,000-slice list is ~15 MB of JSON: read whole and parsed whole, the body, its parsed tree
// and the model built from it were all alive at once. This splits the top-level `items` array as
// the bytes arrive and parses one item at a time, so only the item being decoded is held.
// It works on bytes: JSON's structural characters are ASCII, and no byte of a multi-byte UTF-8
// sequence is, so a character split across chunks is only ever inside a captured span, which
// is decoded once whole.

export class ListDecodeError extends Error {}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;

function isSpace(b: number): boolean {
  return b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
}

// Where the decoder is in the top-level object; `value` captures one JSON value of any kind.
type Phase =
  | 'start' // before the opening brace
  | 'key' // expecting a key or the closing brace
  | 'colon'
  | 'value' // expecting a member's value
  | 'member-end' // expecting a comma or the closing brace
  | 'item' // inside items: expecting an element or the closing bracket
  | 'item-end' // inside items: expecting a comma or the closing bracket
  | 'done';

export class ListDecoder {
  private phase: Phase = 'start';
  /** Pieces of the span being captured (a key, a member's value, an item), with `capturing` set. */
  private pieces: Buffer[] = [];
  private capturing = false;
  private depth = 0;
  private inString = false;
  private escaped = false;
  /** A captured scalar (number, literal) ends at the first delimiter rather than a bracket. */
  private scalar = false;
  /** What the span being captured is for. */
  private target: 'key' | 'value' | 'item' = 'key';
  private key = '';
  /** Elements of the current `items` array: an empty one may close right after its bracket. */
  private itemsSeen = 0;
  private sawItems = false;
  /** Members of the top-level object so far: only an empty object may close right after its brace. */
  private members = 0;
  private readonly fields: Record<string, unknown> = {};
  private bytes = 0;

  /** `onItem` gets each element of `items`, parsed, in order, as soon as it is complete. */
  constructor(private readonly onItem: (item: unknown) => void) {}

  write(chunk: Buffer): void {
    let i = 0;
    const n = chunk.length;
    let spanStart = this.capturing ? 0 : -1;
    while (i < n) {
      if (this.capturing) {
        // Inside a span: track strings and nesting until the value closes.
        const end = this.scan(chunk, i);
        if (end < 0) break;
        this.pieces.push(chunk.subarray(spanStart, end));
        this.finishSpan();
        spanStart = -1;
        i = end;
        continue;
      }
      const b = chunk[i]!;
      if (isSpace(b)) {
        i++;
        continue;
      }
      switch (this.phase) {
        case 'start':
          this.expect(b === OPEN_BRACE, b, 'an object');
          this.phase = 'key';
          i++;
          continue;
        case 'key':
          if (b === CLOSE_BRACE && this.members === 0) {
            this.phase = 'done';
            i++;
            continue;
          }
          this.expect(b === QUOTE, b, 'a key');
          this.target = 'key';
          break;
        case 'colon':
          this.expect(b === COLON, b, "':'");
          this.phase = 'value';
          i++;
          continue;
        case 'value':
          if (this.key === 'items' && b === OPEN_BRACKET) {
            this.sawItems = true;
            this.itemsSeen = 0;
            this.phase = 'item';
            i++;
            continue;
          }
          this.target = 'value';
          break;
        case 'member-end':
          this.expect(b === COMMA || b === CLOSE_BRACE, b, "',' or '}'");
          this.phase = b === COMMA ? 'key' : 'done';
          i++;
          continue;
        case 'item':
          if (b === CLOSE_BRACKET && this.itemsSeen === 0) {
            this.phase = 'member-end';
            i++;
            continue;
          }
          this.target = 'item';
          break;
        case 'item-end':
          this.expect(b === COMMA || b === CLOSE_BRACKET, b, "',' or ']'");
          this.phase = b === COMMA ? 'item' : 'member-end';
          i++;
          continue;
        case 'done':
          throw new ListDecodeError(`unexpected ${describeByte(b)} after the end of the list`);
      }
      // A span starts here (a key, a value or an item).
      this.capturing = true;
      this.pieces = [];
      this.depth = 0;
      this.inString = false;
      this.escaped = false;
      this.scalar = b !== QUOTE && b !== OPEN_BRACE && b !== OPEN_BRACKET;
      spanStart = i;
    }
    if (this.capturing && spanStart >= 0 && spanStart < n) this.pieces.push(chunk.subarray(spanStart, n));
    this.bytes += n;
  }

  /** The list's other top-level members (metadata, kind...), once the body is complete. */
  end(): { fields: Record<string, unknown>; hasItems: boolean } {
    if (this.phase !== 'done') {
      throw new ListDecodeError(this.bytes === 0 ? 'the response is empty' : `the response ended early (after ${this.bytes} bytes)`);
    }
    return { fields: this.fields, hasItems: this.sawItems || this.fields.items === null };
  }

  // Scans a span from `i`; returns the index just past its end, or -1 if it runs past the chunk.
  private scan(chunk: Buffer, i: number): number {
    const n = chunk.length;
    while (i < n) {
      if (this.inString) {
        if (this.escaped) {
          this.escaped = false;
          i++;
          continue;
        }
        // Most of a list's bytes are inside strings: jump to the next quote, which ends the
        // string unless an odd run of backslashes escapes it.
        const quote = chunk.indexOf(QUOTE, i);
        const stop = quote < 0 ? n : quote;
        let backslashes = 0;
        while (stop - backslashes - 1 >= i && chunk[stop - backslashes - 1] === BACKSLASH) backslashes++;
        if (quote < 0) {
          this.escaped = backslashes % 2 === 1;
          return -1;
        }
        i = quote + 1;
        if (backslashes % 2 === 1) continue;
        this.inString = false;
        if (this.depth === 0) return i;
        continue;
      }
      const b = chunk[i]!;
      if (this.scalar) {
        if (isSpace(b) || b === COMMA || b === CLOSE_BRACE || b === CLOSE_BRACKET) return i;
        i++;
        continue;
      }
      if (b === QUOTE) this.inString = true;
      else if (b === OPEN_BRACE || b === OPEN_BRACKET) this.depth++;
      else if (b === CLOSE_BRACE || b === CLOSE_BRACKET) {
        this.depth--;
        if (this.depth === 0) return i + 1;
      }
      i++;
    }
    return -1;
  }

  private finishSpan(): void {
    const text = (this.pieces.length === 1 ? this.pieces[0]! : Buffer.concat(this.pieces)).toString('utf8');
    this.pieces = [];
    this.capturing = false;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw new ListDecodeError(`invalid JSON ${JSON.stringify(text.slice(0, 60))}: ${(err as Error).message}`);
    }
    switch (this.target) {
      case 'key':
        this.key = value as string;
        this.members++;
        this.phase = 'colon';
        return;
      case 'value':
        this.fields[this.key] = value;
        this.phase = 'member-end';
        return;
      case 'item':
        this.itemsSeen++;
        this.phase = 'item-end';
        this.onItem(value);
        return;
    }
  }

  private expect(ok: boolean, b: number, what: string): void {
    if (!ok) throw new ListDecodeError(`expected ${what}, found ${describeByte(b)}`);
  }
}

function describeByte(b: number): string {
  return b >= 0x20 && b < 0x7f ? `'${String.fromCharCode(b)}'` : `byte 0x${b.toString(16)}`;
}
