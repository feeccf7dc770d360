// Text that arrives in pieces (a child's output, a socket, a watch response) cut into lines.

/** Hands each complete line, without its newline, to `onLine`; keeps the unfinished rest. */
export class LineSplitter {
  private rest = '';

  constructor(private readonly onLine: (line: string) => void) {}

  push(text: string): void {
    const buf = this.rest === '' ? text : this.rest + text;
    let from = 0;
    let nl: number;
    while ((nl = buf.indexOf('\n', from)) >= 0) {
      this.onLine(buf.slice(from, nl));
      from = nl + 1;
    }
    this.rest = from === 0 ? buf : buf.slice(from);
  }

  /** The text after the last newline (a last line the writer did not end), taken away. */
  takeRest(): string {
    const rest = this.rest;
    this.rest = '';
    return rest;
  }
}
