// Text that arrives in pieces (a child's output, a socket, a watch response) cut into lines.

/** Hands each complete line, without its newline, to `onLine`; keeps the unfinished rest. */
export class LineSplitter {
  private rest = '';

  constructor(private readonly onLine: (line: string) => void) {}

  push(text: string): void {
    const buf = this.rest === '' ? text : this.rest + text;
    const last = buf.lastIndexOf('\n');
    if (last < 0) {
      this.rest = buf;
      return;
    }
    // The rest is set aside first: a line whose handler throws is not handed out again.
    this.rest = buf.slice(last + 1);
    for (let from = 0; from <= last; ) {
      const nl = buf.indexOf('\n', from);
      this.onLine(buf.slice(from, nl));
      from = nl + 1;
    }
  }

  /** The text after the last newline (a last line the writer did not end), taken away. */
  takeRest(): string {
    const rest = this.rest;
    this.rest = '';
    return rest;
  }
}
