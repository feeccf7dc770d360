// Standalone fake API server, for e2e tests that run the proxy inside a network namespace:
// a server in the test process (root namespace) cannot be reached from there, so this process
// is started inside the namespace and driven over its stdin/stdout.
//
//   node fake-apiserver-main.js [--host 127.0.0.1] [--port 0] [--bookmark-interval-ms N]
//
// Prints `{"url":"http://127.0.0.1:PORT"}` once listening, then reads JSON lines on stdin:
//   {"id":1,"op":"create"|"update","kind":"Service","object":{...}}
//   {"id":2,"op":"remove","kind":"Service","namespace":"default","name":"web"}
//   {"id":3,"op":"list","kind":"Service"}
//   {"id":4,"op":"requests"}   every request received (method, path, query)
//   {"id":5,"op":"events"}     the Events clients posted
//   {"id":6,"op":"compact"}    forget the watch history: resuming watches get 410 Gone
// and answers each with one line `{"id":1,"ok":true,"object":...}` or `{"id":1,"ok":false,"error":"..."}`.
// A line that is not a command is answered with an error (id null when none could be read).
// Exits when stdin closes or on SIGTERM.
import { createInterface } from 'node:readline';
import type { KubeObject, ObjectKind } from '../../src/model/k8s.js';
import { FakeApiServer } from './fake-apiserver.js';

const KINDS: readonly ObjectKind[] = ['Service', 'EndpointSlice', 'Node'];

interface Command {
  id?: unknown;
  op?: unknown;
  kind?: unknown;
  object?: unknown;
  namespace?: unknown;
  name?: unknown;
}

type Answer = { id: unknown; ok: true; object?: unknown; objects?: unknown[] } | { id: unknown; ok: false; error: string };

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Executes one command line against the server; never throws. */
function execute(server: FakeApiServer, line: string): Answer {
  let cmd: Command;
  try {
    const parsed: unknown = JSON.parse(line);
    if (!isRecord(parsed)) return { id: null, ok: false, error: 'command must be a JSON object' };
    cmd = parsed;
  } catch (e) {
    return { id: null, ok: false, error: `bad JSON: ${(e as Error).message}` };
  }
  const id = cmd.id ?? null;
  const fail = (error: string): Answer => ({ id, ok: false, error });
  // What clients did, for tests that check the API calls (RBAC) or the Events a proxy posted.
  if (cmd.op === 'requests') return { id, ok: true, objects: server.requests };
  if (cmd.op === 'events') return { id, ok: true, objects: [...server.events.values()] };
  if (cmd.op === 'compact') {
    server.compact();
    return { id, ok: true };
  }
  if (typeof cmd.kind !== 'string' || !KINDS.includes(cmd.kind as ObjectKind)) {
    return fail(`kind must be one of ${KINDS.join(', ')}, got ${JSON.stringify(cmd.kind)}`);
  }
  const kind = cmd.kind as ObjectKind;
  try {
    switch (cmd.op) {
      case 'create':
      case 'update':
        if (!isRecord(cmd.object)) return fail('object must be a JSON object');
        return { id, ok: true, object: server[cmd.op](kind, cmd.object as KubeObject) };
      case 'remove': {
        if (typeof cmd.name !== 'string' || cmd.name === '') return fail('name must be a non-empty string');
        if (cmd.namespace !== undefined && typeof cmd.namespace !== 'string') return fail('namespace must be a string');
        const gone = server.remove(kind, cmd.namespace, cmd.name);
        return gone ? { id, ok: true, object: gone } : fail(`${kind} ${cmd.namespace ?? ''}/${cmd.name} not found`);
      }
      case 'list':
        return { id, ok: true, objects: server.list(kind) };
      default:
        return fail(`op must be create, update, remove or list, got ${JSON.stringify(cmd.op)}`);
    }
  } catch (e) {
    return fail((e as Error).message);
  }
}

function parseArgs(argv: string[]): { host: string; port: number; bookmarkIntervalMs?: number } {
  const out: { host: string; port: number; bookmarkIntervalMs?: number } = { host: '127.0.0.1', port: 0 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[++i];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === '--host') out.host = value;
    else if (flag === '--port' || flag === '--bookmark-interval-ms') {
      const n = Number(value);
      if (!Number.isInteger(n) || n < 0) throw new Error(`${flag}: not a non-negative integer: ${value}`);
      if (flag === '--port') out.port = n;
      else out.bookmarkIntervalMs = n;
    } else throw new Error(`unknown flag ${flag}`);
  }
  return out;
}

async function main(): Promise<void> {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`fake-apiserver: ${(e as Error).message}\n`);
    process.exit(2);
  }
  const server = await FakeApiServer.start({
    host: args.host,
    port: args.port,
    ...(args.bookmarkIntervalMs !== undefined ? { bookmarkIntervalMs: args.bookmarkIntervalMs } : {}),
  });
  const shutdown = (): void => {
    void server.stop().then(() => process.exit(0));
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  process.stdout.write(JSON.stringify({ url: server.url }) + '\n');
  const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
  rl.on('line', (line) => {
    if (line.trim() === '') return;
    process.stdout.write(JSON.stringify(execute(server, line)) + '\n');
  });
  rl.on('close', shutdown);
}

void main();
