// Client side of the sandbox checks: sends requests to a service address and counts which pod
// answered. Pod servers (podserver.ts) reply `<pod name> <client ip>`, so the first word of a
// reply names the endpoint that got the request.
import dgram from 'node:dgram';
import net from 'node:net';

export type Proto = 'tcp' | 'udp';

/** A failed request as the client sees it: refused (RST / ICMP port unreachable), timeout (dropped), other. */
export type ProbeFailure = 'refused' | 'timeout' | 'unreachable' | 'error';

export interface ProbeJob {
  proto: Proto;
  ip: string;
  port: number;
  count: number;
  /** Requests in flight at once; 1 makes requests strictly one after another. */
  concurrency: number;
  timeoutMs: number;
}

export interface ProbeResult {
  sent: number;
  /** Answers per pod name. */
  answered: Record<string, number>;
  /** Failures per kind. */
  failures: Partial<Record<ProbeFailure, number>>;
}

type One = { pod: string } | { failure: ProbeFailure };

const MAX_COUNT = 10_000;

function classify(err: NodeJS.ErrnoException): One {
  switch (err.code) {
    case 'ECONNREFUSED':
      return { failure: 'refused' };
    case 'ETIMEDOUT':
      return { failure: 'timeout' };
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EACCES':
    case 'EPERM':
      return { failure: 'unreachable' };
    default:
      return { failure: 'error' };
  }
}

function podOf(reply: string): One {
  const pod = reply.trim().split(' ')[0];
  return pod ? { pod } : { failure: 'error' };
}

function tcpOnce(job: ProbeJob): Promise<One> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: job.ip, port: job.port });
    let data = '';
    let done = false;
    const finish = (r: One): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => finish({ failure: 'timeout' }), job.timeoutMs);
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      data += d;
      if (data.includes('\n')) finish(podOf(data));
    });
    sock.on('end', () => finish(data ? podOf(data) : { failure: 'error' }));
    sock.on('error', (e) => finish(classify(e)));
  });
}

function udpOnce(job: ProbeJob): Promise<One> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket(net.isIPv6(job.ip) ? 'udp6' : 'udp4');
    let done = false;
    const finish = (r: One): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.close();
      resolve(r);
    };
    const timer = setTimeout(() => finish({ failure: 'timeout' }), job.timeoutMs);
    sock.on('message', (msg) => finish(podOf(msg.toString('utf8'))));
    sock.on('error', (e) => finish(classify(e)));
    // Connected, so that an ICMP port-unreachable comes back as ECONNREFUSED.
    sock.connect(job.port, job.ip, () => {
      if (!done) sock.send('ping');
    });
  });
}

/** Checks a job read from outside; returns the problem or undefined. */
export function validateJob(job: unknown): string | undefined {
  if (typeof job !== 'object' || job === null) return 'job must be an object';
  const j = job as Partial<ProbeJob>;
  if (j.proto !== 'tcp' && j.proto !== 'udp') return `bad proto ${JSON.stringify(j.proto)}`;
  if (typeof j.ip !== 'string' || !net.isIP(j.ip)) return `bad ip ${JSON.stringify(j.ip)}`;
  if (!Number.isInteger(j.port) || j.port! < 1 || j.port! > 65535) return `bad port ${JSON.stringify(j.port)}`;
  if (!Number.isInteger(j.count) || j.count! < 1 || j.count! > MAX_COUNT) return `count must be 1..${MAX_COUNT}`;
  if (!Number.isInteger(j.concurrency) || j.concurrency! < 1) return 'concurrency must be a positive integer';
  if (!Number.isInteger(j.timeoutMs) || j.timeoutMs! < 1) return 'timeoutMs must be a positive integer';
  return undefined;
}

/** Sends job.count requests and counts the answers per pod. */
export async function probe(job: ProbeJob): Promise<ProbeResult> {
  const problem = validateJob(job);
  if (problem) throw new Error(`probe: ${problem}`);
  const result: ProbeResult = { sent: job.count, answered: {}, failures: {} };
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < job.count) {
      next++;
      const r = await (job.proto === 'tcp' ? tcpOnce(job) : udpOnce(job));
      if ('pod' in r) result.answered[r.pod] = (result.answered[r.pod] ?? 0) + 1;
      else result.failures[r.failure] = (result.failures[r.failure] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: Math.min(job.concurrency, job.count) }, worker));
  return result;
}
