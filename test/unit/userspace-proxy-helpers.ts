// Endpoints and clients for the userspace proxy tests, all on 127.0.0.1 with real sockets.
import dgram from 'node:dgram';
import net from 'node:net';
import { UserspaceProxy, type UserspaceProxyOptions } from '../../src/backend/userspace/proxy.js';

export const HOST = '127.0.0.1';

export interface Endpoint {
  name: string;
  port: number;
  close(): Promise<void>;
}

/** A TCP endpoint that answers "<name>:<what the client sent>" once the client finishes sending. */
export async function tcpEndpoint(name: string): Promise<Endpoint> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => s.end(`${name}:${Buffer.concat(chunks).toString()}`));
  });
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  return {
    name,
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A UDP endpoint that answers each datagram with "<name>:<datagram>". */
export async function udpEndpoint(name: string): Promise<Endpoint> {
  const socket = dgram.createSocket('udp4');
  socket.on('message', (msg, r) => socket.send(`${name}:${msg.toString()}`, r.port, r.address));
  await new Promise<void>((resolve) => socket.bind(0, HOST, resolve));
  return { name, port: socket.address().port, close: () => new Promise<void>((resolve) => socket.close(() => resolve())) };
}

/** A port nothing listens on: bound once by us, then freed. */
export async function deadPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Sends `payload`, half-closes, and returns everything the other side sent before closing. */
export function request(port: number, payload = ''): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: HOST, port, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', reject);
    s.on('end', () => {
      s.end();
      resolve(Buffer.concat(chunks).toString());
    });
    s.end(payload);
  });
}

/** An open connection, for tests that watch it while the proxy changes. */
export function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: HOST, port, allowHalfOpen: true }, () => resolve(s));
    s.once('error', reject);
  });
}

/** The error code a request ends with, or 'ok' with what it got. */
export async function outcome(port: number): Promise<string> {
  try {
    return `ok ${await request(port, 'x')}`;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

export function ep(e: Endpoint): { ip: string; port: number } {
  return { ip: HOST, port: e.port };
}

export function newProxy(opts: Partial<UserspaceProxyOptions> = {}, logs: string[] = []): UserspaceProxy {
  return new UserspaceProxy({ bindAddress: HOST, udpIdleTimeoutMs: 250, log: (m) => logs.push(m), ...opts });
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until `cond` holds (sockets close a few event-loop turns after their peer does). */
export async function until(cond: () => boolean, ms = 2000): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await sleep(5);
  }
  return true;
}
