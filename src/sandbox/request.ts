// One request to a pod server as a client sees it: the common core of the sandbox probe (probe.ts)
// and the e2e test client. Pod servers (podserver.ts) reply `<pod name> <client ip>`, so a reply
// names the endpoint that got the request and the source address it saw.
// Failures are classified the way a client sees them:
//   refused      TCP RST or ICMP port-unreachable (UDP sockets are connected so the ICMP error is reported)
//   timeout      no answer within timeoutMs (packets dropped)
//   unreachable  ICMP host/net unreachable or administratively prohibited
//   reset        connection reset after it was established
//   closed       connection closed without a reply line
//   error        anything else (see detail)
import dgram from 'node:dgram';
import net from 'node:net';

export type Proto = 'tcp' | 'udp';

export type RequestError = 'refused' | 'timeout' | 'unreachable' | 'reset' | 'closed' | 'error';

export type RequestResult = { ok: true; pod: string; seenSource: string } | { ok: false; error: RequestError; detail?: string };

export interface RequestTarget {
  proto: Proto;
  ip: string;
  port: number;
}

export interface SingleRequest extends RequestTarget {
  timeoutMs: number;
  /** Bind the client socket to this local address. */
  sourceIp?: string;
  /** Bind the client socket to this local port. */
  sourcePort?: number;
}

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

/** Checks the target of a request read from outside; returns the problem or undefined. */
export function validateTarget(t: Partial<RequestTarget>): string | undefined {
  if (t.proto !== 'tcp' && t.proto !== 'udp') return `bad proto ${JSON.stringify(t.proto)}`;
  if (typeof t.ip !== 'string' || !net.isIP(t.ip)) return `bad ip ${JSON.stringify(t.ip)}`;
  if (!Number.isInteger(t.port) || t.port! < 1 || t.port! > 65535) return `bad port ${JSON.stringify(t.port)}`;
  return undefined;
}

/**
 * Settles a request exactly once: the first of reply, error or timeout wins, and the socket is
 * released by close().
 */
function settle(timeoutMs: number, close: () => void, resolve: (r: RequestResult) => void): { finish: (r: RequestResult) => void; done: () => boolean } {
  let settled = false;
  const finish = (r: RequestResult): void => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    close();
    resolve(r);
  };
  const timer = setTimeout(() => finish({ ok: false, error: 'timeout' }), timeoutMs);
  return { finish, done: () => settled };
}

function tcpOnce(r: SingleRequest): Promise<RequestResult> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: r.ip, port: r.port, localAddress: r.sourceIp, localPort: r.sourcePort });
    const { finish } = settle(r.timeoutMs, () => sock.destroy(), resolve);
    let data = '';
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

function udpOnce(r: SingleRequest): Promise<RequestResult> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket(net.isIPv6(r.ip) ? 'udp6' : 'udp4');
    const { finish, done } = settle(r.timeoutMs, () => sock.close(), resolve);
    sock.on('message', (msg) => finish(parseReply(msg.toString('utf8'))));
    sock.on('error', (e) => finish(classify(e)));
    // A connected socket receives the ICMP errors for its peer, which is how 'refused' is seen for UDP.
    const connect = (): void =>
      sock.connect(r.port, r.ip, () => {
        if (!done()) sock.send('ping');
      });
    if (r.sourceIp !== undefined || r.sourcePort !== undefined) sock.bind({ address: r.sourceIp, port: r.sourcePort ?? 0 }, connect);
    else connect();
  });
}

/** Sends one request and waits for the reply; never rejects (failures come back classified). */
export function requestOnce(r: SingleRequest): Promise<RequestResult> {
  return r.proto === 'tcp' ? tcpOnce(r) : udpOnce(r);
}

/** Runs task(0) .. task(count - 1) with at most width of them in flight at once. */
export async function runLimited(count: number, width: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(Math.max(1, width), count) }, worker));
}
