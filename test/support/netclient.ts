// Network client helpers for e2e tests: send TCP/UDP requests to pod servers from inside a
// namespace and report which pod answered and which source address it saw.
//
// Each call starts one Node process in the namespace (this file, run as a script: requests as JSON
// on stdin, results as JSON on stdout), so a batch of hundreds of requests costs one process start.
// Failures are classified the way a client sees them:
//   refused      TCP RST or ICMP port-unreachable (UDP sockets are connected so the ICMP error is reported)
//   timeout      no answer within timeoutMs (packets dropped)
//   unreachable  ICMP host/net unreachable or administratively prohibited
//   reset        connection reset after it was established
//   closed       connection closed without a reply line
//   error        anything else (see detail)
import dgram from 'node:dgram';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import type { Topology } from './topology.js';

export type RequestError = 'refused' | 'timeout' | 'unreachable' | 'reset' | 'closed' | 'error';

export type RequestResult = { ok: true; pod: string; seenSource: string } | { ok: false; error: RequestError; detail?: string };

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

function classify(err: NodeJS.ErrnoException): RequestResult {
  switch (err.code) {
    case 'ECONNREFUSED':
      return { ok: false, error: 'refused' };
    case 'ETIMEDOUT':
      return { ok: false, error: 'timeout' };
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EACCES':
    case 'EPERM':
      return { ok: false, error: 'unreachable', detail: err.code };
    case 'ECONNRESET':
    case 'EPIPE':
      return { ok: false, error: 'reset' };
    default:
      return { ok: false, error: 'error', detail: err.code ?? err.message };
  }
}

function parseReply(line: string): RequestResult {
  const parts = line.trim().split(' ');
  if (parts.length !== 2 || !parts[0] || !parts[1]) return { ok: false, error: 'error', detail: `unexpected reply ${JSON.stringify(line)}` };
  return { ok: true, pod: parts[0], seenSource: parts[1] };
}

function tcpOnce(r: BatchRequest): Promise<RequestResult> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: r.ip, port: r.port, localAddress: r.sourceIp, localPort: r.sourcePort });
    let data = '';
    let done = false;
    const finish = (res: RequestResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(res);
    };
    const timer = setTimeout(() => finish({ ok: false, error: 'timeout' }), r.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      data += d;
      const nl = data.indexOf('\n');
      if (nl >= 0) finish(parseReply(data.slice(0, nl)));
    });
    sock.on('end', () => finish(data ? parseReply(data) : { ok: false, error: 'closed' }));
    sock.on('error', (e) => finish(classify(e)));
  });
}

function udpOnce(r: BatchRequest): Promise<RequestResult> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket(net.isIPv6(r.ip) ? 'udp6' : 'udp4');
    let done = false;
    const finish = (res: RequestResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.close();
      resolve(res);
    };
    const timer = setTimeout(() => finish({ ok: false, error: 'timeout' }), r.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    sock.on('message', (msg) => finish(parseReply(msg.toString('utf8'))));
    sock.on('error', (e) => finish(classify(e)));
    // A connected socket receives the ICMP errors for its peer, which is how 'refused' is seen for UDP.
    const connect = (): void =>
      sock.connect(r.port, r.ip, () => {
        if (!done) sock.send('ping');
      });
    if (r.sourceIp !== undefined || r.sourcePort !== undefined) sock.bind({ address: r.sourceIp, port: r.sourcePort ?? 0 }, connect);
    else connect();
  });
}

function validate(r: BatchRequest): string | undefined {
  if (r.proto !== 'tcp' && r.proto !== 'udp') return `bad proto ${JSON.stringify(r.proto)}`;
  if (!net.isIP(r.ip)) return `bad ip ${JSON.stringify(r.ip)}`;
  if (!Number.isInteger(r.port) || r.port < 1 || r.port > 65535) return `bad port ${JSON.stringify(r.port)}`;
  return undefined;
}

/** Runs the requests in this process (the script side); results keep the order of requests. */
export async function runRequests(requests: BatchRequest[], concurrency: number): Promise<RequestResult[]> {
  const results: RequestResult[] = new Array(requests.length);
  // A fixed source port cannot be shared by concurrent sockets.
  const width = requests.some((r) => r.sourcePort !== undefined) ? 1 : Math.max(1, concurrency);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < requests.length) {
      const i = next++;
      const r = requests[i]!;
      const bad = validate(r);
      results[i] = bad ? { ok: false, error: 'error', detail: bad } : await (r.proto === 'tcp' ? tcpOnce(r) : udpOnce(r));
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, requests.length) }, worker));
  return results;
}

/** Sends a batch of requests from namespace ns (logical or full name) using one client process. */
export async function requestBatch(topo: Topology, ns: string, requests: BatchRequest[], opts: { concurrency?: number } = {}): Promise<RequestResult[]> {
  if (requests.length === 0) return [];
  const concurrency = opts.concurrency ?? 16;
  const worst = requests.reduce((sum, r) => sum + (r.timeoutMs ?? DEFAULT_TIMEOUT_MS), 0);
  const res = await topo.exec(ns, process.execPath, [SELF], {
    input: JSON.stringify({ requests, concurrency }),
    timeoutMs: worst + 15000,
  });
  const parsed = JSON.parse(res.stdout) as RequestResult[];
  if (!Array.isArray(parsed) || parsed.length !== requests.length) throw new Error(`netclient in ${ns}: malformed output ${res.stdout.slice(0, 200)}`);
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
  let input = '';
  process.stdin.setEncoding('utf8');
  for await (const chunk of process.stdin) input += chunk;
  let job: { requests: BatchRequest[]; concurrency: number };
  try {
    job = JSON.parse(input);
    if (!Array.isArray(job.requests)) throw new Error('requests must be an array');
  } catch (err) {
    process.stderr.write(`netclient: bad input: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const results = await runRequests(job.requests, Number(job.concurrency) || 1);
  process.stdout.write(JSON.stringify(results));
}

if (process.argv[1] === SELF) void main();
