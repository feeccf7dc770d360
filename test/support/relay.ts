// A TCP relay between the proxy and the API server that can misbehave the way networks do:
// freeze (stop forwarding on every open connection without closing it, as when a NAT or
// load balancer drops its state), drop (reset every open connection) and refuse (reset new
// connections too, as a server that is down). New connections after a freeze work.
//
// In-process: `await Relay.start(host, port)`. Inside a network namespace, as a process:
//   node relay.js --target HOST:PORT [--host 127.0.0.1]
// prints `{"port":N}` once listening, then takes one command per stdin line (freeze, drop,
// refuse, accept, count) and answers each with `{"ok":true,"command":...,"connections":N}`.
// Exits when stdin closes.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Proc } from '../../src/sandbox/processes.js';
import { LineSplitter } from '../../src/lines.js';

interface Pair {
  client: Socket;
  upstream: Socket;
}

export class Relay {
  private readonly pairs = new Set<Pair>();
  private refusing = false;

  private constructor(
    private readonly server: Server,
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {
    server.on('connection', (client) => this.accept(client));
  }

  static async start(targetHost: string, targetPort: number, host = '127.0.0.1'): Promise<Relay> {
    const server = createServer();
    const relay = new Relay(server, targetHost, targetPort);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, host, () => resolve());
    });
    return relay;
  }

  get port(): number {
    const a = this.server.address();
    return typeof a === 'object' && a !== null ? a.port : 0;
  }

  /** Open connections (frozen ones included). */
  get connections(): number {
    return this.pairs.size;
  }

  private accept(client: Socket): void {
    if (this.refusing) {
      client.resetAndDestroy();
      return;
    }
    const upstream = connect(this.targetPort, this.targetHost);
    const pair = { client, upstream };
    this.pairs.add(pair);
    const end = (): void => {
      if (!this.pairs.delete(pair)) return;
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', end);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Every open connection stops carrying data in both directions; none is closed. */
  freeze(): void {
    for (const { client, upstream } of this.pairs) {
      client.unpipe(upstream);
      upstream.unpipe(client);
      client.pause();
      upstream.pause();
    }
  }

  /** Resets every open connection. */
  drop(): void {
    for (const { client, upstream } of [...this.pairs]) {
      client.resetAndDestroy();
      upstream.destroy();
    }
    this.pairs.clear();
  }

  /** While on, open connections are reset and new ones refused. */
  refuse(on: boolean): void {
    this.refusing = on;
    if (on) this.drop();
  }

  async close(): Promise<void> {
    this.drop();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Test side of a relay process started inside a namespace (see the header). */
export class RelayProcess {
  private waiting: Array<(line: string) => void> = [];

  private constructor(
    readonly proc: Proc,
    readonly port: number,
  ) {
    const lines = new LineSplitter((line) => this.waiting.shift()?.(line));
    proc.child.stdout!.on('data', (chunk: string) => lines.push(chunk));
  }

  static async start(proc: Proc): Promise<RelayProcess> {
    const first = await proc.waitFor(/^\{"port":/, { stream: 'stdout', timeoutMs: 10_000 });
    return new RelayProcess(proc, (JSON.parse(first) as { port: number }).port);
  }

  /** Sends a command and returns the number of open connections it reports. */
  async send(command: 'freeze' | 'drop' | 'refuse' | 'accept' | 'count'): Promise<number> {
    const line = await new Promise<string>((resolve) => {
      this.waiting.push(resolve);
      this.proc.child.stdin!.write(command + '\n');
    });
    const answer = JSON.parse(line) as { ok: boolean; connections: number; error?: string };
    if (!answer.ok) throw new Error(`relay: ${answer.error}`);
    return answer.connections;
  }
}

async function main(argv: string[]): Promise<void> {
  let target = '';
  let host = '127.0.0.1';
  for (let i = 0; i < argv.length; i += 2) {
    if (argv[i] === '--target') target = argv[i + 1] ?? '';
    else if (argv[i] === '--host') host = argv[i + 1] ?? host;
    else throw new Error(`unknown flag ${argv[i]}`);
  }
  const m = /^(.+):(\d+)$/.exec(target);
  if (!m) throw new Error('--target HOST:PORT is required');
  const relay = await Relay.start(m[1]!, Number(m[2]), host);
  process.stdout.write(JSON.stringify({ port: relay.port }) + '\n');
  const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
  rl.on('line', (raw) => {
    const command = raw.trim();
    if (command === 'freeze') relay.freeze();
    else if (command === 'drop') relay.drop();
    else if (command === 'refuse') relay.refuse(true);
    else if (command === 'accept') relay.refuse(false);
    else if (command !== 'count') {
      process.stdout.write(JSON.stringify({ ok: false, error: `unknown command ${JSON.stringify(command)}` }) + '\n');
      return;
    }
    process.stdout.write(JSON.stringify({ ok: true, command, connections: relay.connections }) + '\n');
  });
  rl.on('close', () => void relay.close().then(() => process.exit(0)));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`relay: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(2);
  });
}
