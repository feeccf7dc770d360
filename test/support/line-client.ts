// The driving side of a process that takes JSON lines on stdin and answers on stdout (the fake
// API server's and the benchmark prober's mains): each command carries an id, each answer echoes
// it. Other lines (announcements such as `{"url":…}`) are queued for `nextOther`; text that is
// not JSON is skipped.
import type { ChildProcess } from 'node:child_process';
import { LineSplitter } from '../../src/lines.js';

interface Pending {
  resolve: (answer: Record<string, unknown>) => void;
  reject: (err: Error) => void;
}

export class LineClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly others: Array<Record<string, unknown>> = [];
  private readonly otherWaiters: Array<(a: Record<string, unknown>) => void> = [];
  /** The end of what the process wrote to stderr, for error messages. */
  stderr = '';

  /** `name` starts the errors of failed commands and of an exit with commands unanswered. */
  constructor(
    readonly child: ChildProcess,
    private readonly name = 'process',
  ) {
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => (this.stderr = (this.stderr + chunk).slice(-4000)));
    const lines = new LineSplitter((line) => this.onLine(line));
    child.stdout!.on('data', (chunk: string) => lines.push(chunk));
    child.once('exit', () => {
      for (const p of this.pending.values()) p.reject(new Error(`${this.name} exited; stderr: ${this.stderr}`));
      this.pending.clear();
    });
  }

  private onLine(line: string): void {
    let answer: Record<string, unknown>;
    try {
      answer = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    const p = typeof answer.id === 'number' && answer.started === undefined ? this.pending.get(answer.id) : undefined;
    if (!p) {
      const w = this.otherWaiters.shift();
      if (w) w(answer);
      else this.others.push(answer);
      return;
    }
    this.pending.delete(answer.id as number);
    if (answer.ok === true) p.resolve(answer);
    else p.reject(new Error(`${this.name}: ${String(answer.error)}`));
  }

  /** The next line that is not an answer to a command. */
  nextOther(): Promise<Record<string, unknown>> {
    const o = this.others.shift();
    if (o) return Promise.resolve(o);
    return new Promise((resolve) => this.otherWaiters.push(resolve));
  }

  send(cmd: Record<string, unknown>): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.stdin!.write(JSON.stringify({ ...cmd, id }) + '\n');
    });
  }
}
