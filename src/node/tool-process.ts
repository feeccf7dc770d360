// Long-lived tool processes: a helper shell that forks tools cheaply, `nft -i`, `ipvsadm
// --restore`, `ipset -`. What they share is here: the process (killed with the proxy), requests
// answered one at a time in call order, a timeout per request that gives up on a wedged tool,
// and what a request in flight gets when the process dies. How a request is written and when its
// answer is complete is each tool's own.
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DIE_WITH_PARENT, EXEC_TEMP_PREFIX, helperFor, keepAlive, quote, spawnTool, type ExecOptions, type ExecResult } from './exec.js';
import { linesOfFile, writeFileInPieces } from './pieces.js';

export abstract class ToolProcess<Answer> {
  protected readonly child: ChildProcessWithoutNullStreams;
  private queue: Promise<unknown> = Promise.resolve();
  private inFlight: ((answer: Answer) => void) | undefined;
  private readonly killAtExit = (): void => this.kill();
  dead = false;

  /** `argv` runs through `wrap` (a test's namespace), dying with the proxy. */
  constructor(argv: string[], wrap: string[]) {
    this.child = spawnTool(argv, wrap);
    this.child.stdin.on('error', () => undefined);
    const die = (): void => {
      this.dead = true;
      process.off('exit', this.killAtExit);
      this.answer(this.diedAnswer());
    };
    this.child.on('error', die);
    this.child.on('exit', die);
    process.once('exit', this.killAtExit);
    keepAlive(this.child, false);
  }

  /** What a request gets when the process has died (before or while it runs). */
  protected abstract diedAnswer(): Answer;

  /** Whether a request waits for its answer: output before or after one belongs to none. */
  protected get answering(): boolean {
    return this.inFlight !== undefined;
  }

  /** Completes the request in flight. */
  protected answer(a: Answer): void {
    const done = this.inFlight;
    this.inFlight = undefined;
    done?.(a);
  }

  /**
   * Queues a request: once those before it are answered, `send` writes it and the answer comes
   * from the tool's output (answer()), or from `timedOut` after `timeoutMs`, when the process is
   * killed: a tool that does not answer is not trusted with the next request.
   */
  protected request(send: () => void, timeoutMs: number, timedOut: () => Answer): Promise<Answer> {
    const next = this.queue.then(
      () =>
        new Promise<Answer>((resolve) => {
          if (this.dead) return resolve(this.diedAnswer());
          keepAlive(this.child, true);
          const timer = setTimeout(() => {
            this.inFlight = undefined;
            this.kill();
            resolve(timedOut());
          }, timeoutMs);
          this.inFlight = (a) => {
            clearTimeout(timer);
            if (!this.dead) keepAlive(this.child, false);
            resolve(a);
          };
          send();
        }),
    );
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** Ends the process; a request in flight gets diedAnswer(). */
  kill(): void {
    this.dead = true;
    this.child.kill('SIGKILL');
  }
}

/** Longest a kernel tool may run (a full restore of a large ruleset takes seconds, not minutes). */
const COMMAND_TIMEOUT_MS = 180_000;

/**
 * Runs tools through one long-lived shell: starting a process from a large Node heap costs
 * milliseconds per call, a small shell forks the tool much more cheaply. Input goes through a
 * private temporary file (as the last argument, or as stdin); the shell answers with the exit
 * status.
 */
export class CommandShell extends ToolProcess<string> {
  private readonly dir = mkdtempSync(join(tmpdir(), `${EXEC_TEMP_PREFIX}${process.pid}-`));
  private buf = '';
  private seq = 0;

  constructor(wrap: string[]) {
    super(['sh'], wrap);
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (d: string) => {
      this.buf += d;
      const nl = this.buf.indexOf('\n');
      if (nl < 0 || !this.answering) return;
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      this.answer(line);
    });
    this.child.stderr.resume();
    process.once('exit', () => rmSync(this.dir, { recursive: true, force: true }));
  }

  protected diedAnswer(): string {
    return 'died';
  }

  /** Runs `argv` with `input` as a file named by the last argument (`as: 'arg'`) or as stdin. */
  async run(argv: string[], input: string | Iterable<string>, as: 'arg' | 'stdin' = 'arg', timeoutMs = COMMAND_TIMEOUT_MS): Promise<ExecResult> {
    let stdout = '';
    const res = await this.runWith(argv, input, as, timeoutMs, (f) => {
      stdout = readOrEmpty(f);
    });
    return { ...res, stdout };
  }

  /**
   * Like run without input, but its output goes to `onLine` a line at a time, read from its file
   * in pieces: a whole save of 10,000 services is 34 MB, held whole twice (bytes and text).
   */
  async runLines(argv: string[], onLine: (line: string) => void, timeoutMs = COMMAND_TIMEOUT_MS): Promise<Omit<ExecResult, 'stdout'>> {
    return this.runWith(argv, '', 'stdin', timeoutMs, (f) => readLines(f, onLine));
  }

  /**
   * Runs `argv` once per input, all at the same time, each input a file named by the last
   * argument; resolves when every one has exited, with each one's status and stderr.
   */
  async runTogether(argv: string[], inputs: Array<string | Iterable<string>>, timeoutMs = COMMAND_TIMEOUT_MS): Promise<Array<Omit<ExecResult, 'stdout'>>> {
    return this.runAll(
      inputs.map((input) => ({ argv, input, as: 'arg' as const })),
      timeoutMs,
      () => undefined,
    );
  }

  private async runWith(
    argv: string[],
    input: string | Iterable<string>,
    as: 'arg' | 'stdin',
    timeoutMs: number,
    takeStdout: (file: string) => void,
  ): Promise<Omit<ExecResult, 'stdout'>> {
    return (await this.runAll([{ argv, input, as }], timeoutMs, takeStdout))[0]!;
  }

  private async runAll(
    commands: Array<{ argv: string[]; input: string | Iterable<string>; as: 'arg' | 'stdin' }>,
    timeoutMs: number,
    takeStdout: (file: string) => void,
  ): Promise<Array<Omit<ExecResult, 'stdout'>>> {
    if (this.dead) throw new Error('helper shell exited');
    const files = commands.map(() => {
      const id = this.seq++;
      return { inFile: join(this.dir, `in-${id}`), outFile: join(this.dir, `out-${id}`), errFile: join(this.dir, `err-${id}`) };
    });
    const started = commands.map(({ argv, as }, i) => {
      const { inFile, outFile, errFile } = files[i]!;
      const tool = [...DIE_WITH_PARENT, ...argv];
      const cmd = as === 'arg' ? [...tool, inFile].map(quote).join(' ') + ' </dev/null' : `${tool.map(quote).join(' ')} <${quote(inFile)}`;
      return `${cmd} >${quote(outFile)} 2>${quote(errFile)}`;
    });
    // One command runs in the shell itself; several start in the background and are waited for.
    const line =
      commands.length === 1
        ? `${started[0]}; echo "rc=$?"\n`
        : `${started.map((c, i) => `${c} & p${i}=$!`).join('; ')}; ${started.map((_, i) => `wait $p${i}; r${i}=$?`).join('; ')}; echo "rc=${started.map((_, i) => `$r${i}`).join(' ')}"\n`;
    const answer = await this.request(
      () => {
        commands.forEach((c, i) => writeInput(files[i]!.inFile, c.input));
        this.child.stdin.write(line);
      },
      timeoutMs,
      () => 'rc=124 timeout',
    );
    const removeAll = (): void => {
      for (const f of files) for (const path of [f.inFile, f.outFile, f.errFile]) rmSync(path, { force: true });
    };
    if (answer === 'died') {
      removeAll();
      throw new Error('helper shell exited');
    }
    const stderrs: string[] = [];
    try {
      takeStdout(files[0]!.outFile);
    } finally {
      for (const f of files) stderrs.push(readOrEmpty(f.errFile));
      removeAll();
    }
    if (answer === 'rc=124 timeout') {
      return commands.map((c, i) => ({ code: 124, stderr: `${c.argv[0]} did not finish within ${timeoutMs / 1000} s\n${stderrs[i]}` }));
    }
    const codes = /^rc=([\d ]+)$/.exec(answer.trim())?.[1]!.split(' ');
    return commands.map((_, i) => ({ code: codes?.[i] !== undefined ? Number(codes[i]) : 1, stderr: stderrs[i]! }));
  }
}

function readOrEmpty(f: string): string {
  try {
    return readFileSync(f, 'utf8');
  } catch {
    return '';
  }
}

/** Hands a file's lines to `onLine` (without their newline); none when there is no file. */
function readLines(path: string, onLine: (line: string) => void): void {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return;
  }
  try {
    for (const line of linesOfFile(fd)) onLine(line);
  } finally {
    closeSync(fd);
  }
}

/** Input given in pieces is written piece by piece: it is never held whole. */
function writeInput(path: string, input: string | Iterable<string>): void {
  if (typeof input === 'string') writeFileSync(path, input, { mode: 0o600 });
  else writeFileInPieces(path, input);
}

const shells = new Map<string, CommandShell>();

/** The helper shell for a command prefix; each lane is a shell of its own, to run tools side by side. */
export function shellFor(opts: ExecOptions, lane = 0): CommandShell {
  return helperFor(shells, opts, (wrap) => new CommandShell(wrap), lane);
}
