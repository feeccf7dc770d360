// The benchmark's hands inside the proxy's network namespace: a TCP server that stands in for
// every endpoint (the namespace routes the whole endpoint range to lo), a prober that connects
// to a service VIP until it answers, and a CPU profiler client for the proxy's inspector port.
// Driven by JSON lines on stdin, one JSON answer per line on stdout:
//   {"id":1,"op":"wait","ip":"10.96.0.5","port":80,"timeoutMs":30000}  → {"id":1,"ok":true,"at":<epoch ms>}
//   {"id":2,"op":"connects","ip":"10.96.0.5","port":80,"count":1000}  → {"id":2,"ok":true,"ms":[…]}
//   {"id":3,"op":"profile-start","inspectPort":9229}  /  {"id":4,"op":"profile-stop","file":"x.cpuprofile"}
// `wait` answers {"id":1,"started":true} first, once its first connection attempt is out.
import { writeFileSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { WebSocket } from 'undici';
import { ENDPOINT_PORT } from './workload.js';

/** A new attempt this often while waiting: the resolution of a `wait`. */
const ATTEMPT_EVERY_MS = 1;
/** An attempt not answered by then is abandoned (its SYN went nowhere). */
const ATTEMPT_LIFETIME_MS = 200;

interface Command {
  id: number;
  op: string;
  ip?: string;
  port?: number;
  timeoutMs?: number;
  count?: number;
  inspectPort?: number;
  file?: string;
}

/** Wall-clock milliseconds with sub-millisecond precision, comparable across processes. */
function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

function reply(answer: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(answer) + '\n');
}

/** Resolves with the time the first of many staggered connection attempts to ip:port connects. */
function waitReachable(ip: string, port: number, timeoutMs: number, onStarted: () => void): Promise<number> {
  return new Promise((resolve, reject) => {
    const live = new Set<Socket>();
    let done = false;
    const finish = (err: Error | null, at = 0): void => {
      if (done) return;
      done = true;
      clearInterval(ticker);
      clearTimeout(deadline);
      for (const s of live) s.destroy();
      if (err) reject(err);
      else resolve(at);
    };
    const attempt = (): void => {
      const s = new Socket();
      live.add(s);
      const expire = setTimeout(() => s.destroy(), ATTEMPT_LIFETIME_MS);
      s.once('connect', () => finish(null, nowMs()));
      s.once('error', () => undefined);
      s.once('close', () => {
        clearTimeout(expire);
        live.delete(s);
      });
      s.connect({ host: ip, port });
    };
    const ticker = setInterval(attempt, ATTEMPT_EVERY_MS);
    const deadline = setTimeout(() => finish(new Error(`${ip}:${port} not reachable within ${timeoutMs} ms`)), timeoutMs);
    attempt();
    onStarted();
  });
}

/** Sequential connections; the time from connect() to the connection being established, each. */
async function connectTimes(ip: string, port: number, count: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    out.push(
      await new Promise<number>((resolve, reject) => {
        const t0 = performance.now();
        const s = new Socket();
        s.setTimeout(2000, () => s.destroy(new Error('connect timed out')));
        s.once('connect', () => {
          const ms = performance.now() - t0;
          s.destroy();
          resolve(ms);
        });
        s.once('error', reject);
        s.connect({ host: ip, port });
      }),
    );
  }
  return out;
}

/** A minimal DevTools protocol client: the Profiler domain is all the benchmark needs. */
class Inspector {
  private nextId = 1;
  private readonly pending = new Map<number, (result: unknown) => void>();

  private constructor(private readonly ws: WebSocket) {
    ws.addEventListener('message', (ev) => {
      const msg = JSON.parse(String(ev.data)) as { id?: number; result?: unknown };
      if (msg.id !== undefined) this.pending.get(msg.id)?.(msg.result);
    });
  }

  static async connect(port: number): Promise<Inspector> {
    const targets = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as Array<{ webSocketDebuggerUrl: string }>;
    const ws = new WebSocket(targets[0]!.webSocketDebuggerUrl);
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener('open', () => resolve());
      ws.addEventListener('error', () => reject(new Error('inspector connection failed')));
    });
    return new Inspector(ws);
  }

  call(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }

  close(): void {
    this.ws.close();
  }
}

let inspector: Inspector | null = null;

async function execute(cmd: Command): Promise<Record<string, unknown>> {
  switch (cmd.op) {
    case 'wait':
      return { at: await waitReachable(cmd.ip!, cmd.port!, cmd.timeoutMs ?? 30000, () => reply({ id: cmd.id, started: true })) };
    case 'connects':
      return { ms: await connectTimes(cmd.ip!, cmd.port!, cmd.count ?? 1000) };
    case 'profile-start':
      inspector = await Inspector.connect(cmd.inspectPort!);
      await inspector.call('Profiler.enable');
      await inspector.call('Profiler.start');
      return {};
    case 'profile-stop': {
      if (!inspector) throw new Error('no profile running');
      const result = (await inspector.call('Profiler.stop')) as { profile: unknown };
      writeFileSync(cmd.file!, JSON.stringify(result.profile));
      inspector.close();
      inspector = null;
      return {};
    }
    default:
      throw new Error(`unknown op ${cmd.op}`);
  }
}

const server = createServer((s) => s.end());
server.listen(ENDPOINT_PORT, '0.0.0.0', () => reply({ listening: true }));
const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on('line', (line) => {
  const cmd = JSON.parse(line) as Command;
  execute(cmd).then(
    (r) => reply({ id: cmd.id, ok: true, ...r }),
    (e: unknown) => reply({ id: cmd.id, ok: false, error: e instanceof Error ? e.message : String(e) }),
  );
});
rl.on('close', () => process.exit(0));
