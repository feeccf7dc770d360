// Network client helpers for e2e tests: send TCP/UDP requests to pod servers from inside a
// namespace and report which pod answered and which source address it saw.
//
// One long-lived Node process per namespace (this file, run as a script: one batch as a JSON line
// on stdin, its results as a JSON line on stdout) serves every batch sent from there: a process
// start costs ~0.1 s on the host but ~1 s in User-Mode Linux, and the suites send hundreds of
// batches. The topology starts it and kills it with its namespaces. Sending one request and
// classifying its failures is src/sandbox/request.ts.
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Proc } from '../../src/sandbox/processes.js';
import { requestOnce, runLimited, validateTarget, type RequestResult } from '../../src/sandbox/request.js';
import type { Topology } from './topology.js';

export type { RequestError, RequestResult } from '../../src/sandbox/request.js';

export interface RequestOptions {
  /** Per-request limit; default 1500 ms. */
  timeoutMs?: number;
  /** Bind the client socket to this local address. */
  sourceIp?: string;
  /** Bind the client socket to this local port (requests then run one at a time). */
  sourcePort?: number;
}

export interface BatchRequest extends RequestOptions {
  proto: 'tcp' | 'udp';
  ip: string;
  port: number;
}

export interface ManyResult {
  /** Successful answers per pod name. */
  pods: Record<string, number>;
  /** Failures per error kind. */
  errors: Record<string, number>;
  /** Source addresses the pods saw, with counts. */
  sources: Record<string, number>;
  results: RequestResult[];
}

const DEFAULT_TIMEOUT_MS = 1500;
const SELF = fileURLToPath(import.meta.url);

/** Runs the requests in this process (the script side); results keep the order of requests. */
export async function runRequests(requests: BatchRequest[], concurrency: number): Promise<RequestResult[]> {
  const results: RequestResult[] = new Array(requests.length);
  // A fixed source port cannot be shared by concurrent sockets.
  const width = requests.some((r) => r.sourcePort !== undefined) ? 1 : concurrency;
  await runLimited(requests.length, width, async (i) => {
    const r = requests[i]!;
    const bad = validateTarget(r);
    results[i] = bad ? { ok: false, error: 'error', detail: bad } : await requestOnce({ ...r, timeoutMs: r.timeoutMs ?? DEFAULT_TIMEOUT_MS });
  });
  return results;
}

/** A namespace's client process: batches go one at a time, answers come back in order. */
class Client {
  private readonly waiting: Array<(line: string | null) => void> = [];
  private queue: Promise<unknown> = Promise.resolve();

  constructor(readonly proc: Proc) {
    createInterface({ input: proc.child.stdout! }).on('line', (line) => this.waiting.shift()?.(line));
    // A client that died mid-write is reported by 'close' below, not as a stream error.
    proc.child.stdin!.on('error', () => undefined);
    proc.child.once('close', () => {
      for (const w of this.waiting.splice(0)) w(null);
    });
  }

  get alive(): boolean {
    return this.proc.child.exitCode === null && this.proc.child.signalCode === null;
  }

  send(job: { requests: BatchRequest[]; concurrency: number }, timeoutMs: number): Promise<string> {
    const turn = this.queue.then(
      () =>
        new Promise<string>((resolve, reject) => {
          const timer = setTimeout(() => {
            // Its answer, if it ever comes, would be taken for the next batch's.
            void this.proc.stop(0);
            reject(new Error(`netclient in ${this.proc.ns}: no answer within ${timeoutMs} ms`));
          }, timeoutMs);
          this.waiting.push((line) => {
            clearTimeout(timer);
            if (line === null) reject(new Error(`netclient in ${this.proc.ns} exited: ${this.proc.stderr().slice(-500)}`));
            else resolve(line);
          });
          this.proc.child.stdin!.write(JSON.stringify(job) + '\n');
        }),
    );
    this.queue = turn.catch(() => undefined);
    return turn;
  }
}

const clients = new WeakMap<Topology, Map<string, Client>>();

function clientFor(topo: Topology, ns: string): Client {
  let byNs = clients.get(topo);
  if (!byNs) clients.set(topo, (byNs = new Map()));
  const full = topo.ns(ns);
  let client = byNs.get(full);
  if (!client?.alive) {
    client = new Client(topo.spawn(full, process.execPath, [SELF]));
    byNs.set(full, client);
  }
  return client;
}

/** Sends a batch of requests from namespace ns (logical or full name) through its client process. */
export async function requestBatch(topo: Topology, ns: string, requests: BatchRequest[], opts: { concurrency?: number } = {}): Promise<RequestResult[]> {
  if (requests.length === 0) return [];
  const concurrency = opts.concurrency ?? 16;
  const worst = requests.reduce((sum, r) => sum + (r.timeoutMs ?? DEFAULT_TIMEOUT_MS), 0);
  const line = await clientFor(topo, ns).send({ requests, concurrency }, worst + 15000);
  const parsed = JSON.parse(line) as RequestResult[];
  if (!Array.isArray(parsed) || parsed.length !== requests.length) throw new Error(`netclient in ${ns}: malformed output ${line.slice(0, 200)}`);
  return parsed;
}

export async function tcpRequest(topo: Topology, ns: string, ip: string, port: number, opts: RequestOptions = {}): Promise<RequestResult> {
  const [r] = await requestBatch(topo, ns, [{ ...opts, proto: 'tcp', ip, port }]);
  return r!;
}

export async function udpRequest(topo: Topology, ns: string, ip: string, port: number, opts: RequestOptions = {}): Promise<RequestResult> {
  const [r] = await requestBatch(topo, ns, [{ ...opts, proto: 'udp', ip, port }]);
  return r!;
}

export function tally(results: RequestResult[]): ManyResult {
  const out: ManyResult = { pods: {}, errors: {}, sources: {}, results };
  for (const r of results) {
    if (r.ok) {
      out.pods[r.pod] = (out.pods[r.pod] ?? 0) + 1;
      out.sources[r.seenSource] = (out.sources[r.seenSource] ?? 0) + 1;
    } else {
      out.errors[r.error] = (out.errors[r.error] ?? 0) + 1;
    }
  }
  return out;
}

/** Sends n requests to ip:port (TCP unless proto says otherwise) and counts the answers per pod. */
export async function requestMany(
  topo: Topology,
  ns: string,
  ip: string,
  port: number,
  n: number,
  opts: RequestOptions & { proto?: 'tcp' | 'udp'; concurrency?: number } = {},
): Promise<ManyResult> {
  const { proto = 'tcp', concurrency, ...req } = opts;
  const requests: BatchRequest[] = Array.from({ length: n }, () => ({ ...req, proto, ip, port }));
  return tally(await requestBatch(topo, ns, requests, concurrency === undefined ? {} : { concurrency }));
}

async function main(): Promise<void> {
  for await (const line of createInterface({ input: process.stdin })) {
    let job: { requests: BatchRequest[]; concurrency: number };
    try {
      job = JSON.parse(line);
      if (!Array.isArray(job.requests)) throw new Error('requests must be an array');
    } catch (err) {
      process.stderr.write(`netclient: bad input: ${(err as Error).message}\n`);
      process.exit(2);
    }
    const results = await runRequests(job.requests, Number(job.concurrency) || 1);
    process.stdout.write(JSON.stringify(results) + '\n');
  }
}

if (process.argv[1] === SELF) void main();
