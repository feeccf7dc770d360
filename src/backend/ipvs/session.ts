// Long-lived `ipvsadm --restore` and `ipset -` processes for partial syncs. Both apply each input
// line as they read it (measured in User-Mode Linux, where a process start costs 0.3-0.6 s and so
// a one-shot tool per change costs more than the change). A batch of lines is followed by a
// barrier command with fixed output (`-L --timeout`, `version`): once its line is read back, the
// kernel holds every line before it. Errors and the barrier share one pipe (stderr into stdout,
// stdout line-buffered by stdbuf), so anything read before the barrier is the batch's error text.
// Any error, a timeout or a dead process ends the session; the caller falls back to one-shot tools.
import { helperFor, quote, type ExecOptions } from '../../node/exec.js';
import { ToolProcess } from '../../node/tool-process.js';
import { LineSplitter } from '../../lines.js';

export class SessionError extends Error {
  override name = 'SessionError';
}

export interface SessionTool {
  /** The tool and its arguments, run with stdout line-buffered and stderr merged into it. */
  argv: string[];
  /** A command without effect whose output line proves the lines before it ran. */
  barrier: string;
  /** Its output line. */
  done: RegExp;
  /** Output that is neither an error nor the barrier's (prompts), removed before judging. */
  noise?: RegExp;
}

export const IPVSADM_SESSION: SessionTool = { argv: ['ipvsadm', '--restore'], barrier: '-L --timeout', done: /^Timeout \(tcp tcpfin udp\):/ };
// Interactive mode prints a prompt (without a newline) before each command it reads.
export const IPSET_SESSION: SessionTool = { argv: ['ipset', '-'], barrier: 'version', done: /^ipset v[\d.]+, protocol version:/, noise: /^(ipset> )+/ };

/** Longest a partial batch may take before the session is given up (the one-shot path follows). */
export const SESSION_TIMEOUT_MS = 10_000;

export class ToolSession extends ToolProcess<string | undefined> {
  private readonly lineSplitter = new LineSplitter((line) => this.onLine(line));
  private output: string[] = [];

  constructor(
    private readonly tool: SessionTool,
    wrap: string[],
  ) {
    super(['sh', '-c', `exec stdbuf -oL ${tool.argv.map(quote).join(' ')} 2>&1`], wrap);
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (d: string) => this.lineSplitter.push(d));
    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (d: string) => this.output.push(d.trim()));
  }

  protected diedAnswer(): string {
    return `${this.tool.argv[0]} exited${this.output.length ? `: ${this.output.join('; ')}` : ''}`;
  }

  private onLine(raw: string): void {
    const line = raw.replace(this.tool.noise ?? /^$/, '');
    if (this.tool.done.test(line)) {
      const failure = this.output.length > 0 ? this.output.join('; ') : undefined;
      this.output = [];
      this.answer(failure);
    } else if (line.trim() !== '') this.output.push(line.trim());
  }

  /** Ends the session (after a failure: whatever it holds half-done is not trusted). */
  close(): void {
    this.kill();
  }

  /** Feeds `lines` (each ending in a newline) and resolves once the kernel holds them; rejects with SessionError otherwise. */
  async run(lines: string, timeoutMs = SESSION_TIMEOUT_MS): Promise<void> {
    const name = this.tool.argv[0]!;
    if (this.dead) throw new SessionError(`${name} session has exited`);
    const failure = await this.request(
      () => this.child.stdin.write(`${lines}${this.tool.barrier}\n`),
      timeoutMs,
      () => `no answer within ${timeoutMs / 1000} s`,
    );
    if (failure === undefined) return;
    this.close();
    throw new SessionError(`${name} session: ${failure}`);
  }
}

const ipvsadmSessions = new Map<string, ToolSession>();
const ipsetSessions = new Map<string, ToolSession>();

/** The `ipvsadm --restore` session of a command prefix (a new one when the last has ended). */
export function ipvsadmSession(exec: ExecOptions): ToolSession {
  return helperFor(ipvsadmSessions, exec, (wrap) => new ToolSession(IPVSADM_SESSION, wrap));
}

/** The `ipset -` session of a command prefix (a new one when the last has ended). */
export function ipsetSession(exec: ExecOptions): ToolSession {
  return helperFor(ipsetSessions, exec, (wrap) => new ToolSession(IPSET_SESSION, wrap));
}
