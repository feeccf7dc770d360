// A tiny "pod" that tells the caller who answered and which source address it saw.
//
// TCP: every accepted connection gets one line `<podName> <clientIP>\n`, then the server closes it.
// UDP: every datagram is answered with `<podName> <clientIP>` sent back to the datagram's source.
// Sockets listen on `::` with dual-stack enabled, so IPv4 clients are served too; IPv4-mapped
// addresses (`::ffff:a.b.c.d`) are reported as plain IPv4 so tests can compare against pod IPs.
import dgram from 'node:dgram';
import net from 'node:net';

export interface PodServerOptions {
  name: string;
  tcp: number[];
  udp: number[];
}

export interface PodServer {
  close(): Promise<void>;
}

export function plainAddress(addr: string | undefined): string {
  if (!addr) return '?';
  return addr.startsWith('::ffff:') && net.isIPv4(addr.slice(7)) ? addr.slice(7) : addr;
}

function parsePort(flag: string, raw: string): number {
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n < 1 || n > 65535) throw new Error(`${flag}: invalid port ${JSON.stringify(raw)}`);
  return n;
}

/** Parses `--name N --tcp P[,P...] --udp P[,P...]` (flags may repeat). Throws on bad input. */
export function parsePodServerArgs(argv: string[]): PodServerOptions {
  const opts: PodServerOptions = { name: '', tcp: [], udp: [] };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (flag !== '--name' && flag !== '--tcp' && flag !== '--udp') throw new Error(`unknown argument ${JSON.stringify(flag)}`);
    if (value === undefined) throw new Error(`${flag} needs a value`);
    i++;
    if (flag === '--name') opts.name = value;
    else for (const p of value.split(',').filter((s) => s !== '')) opts[flag === '--tcp' ? 'tcp' : 'udp'].push(parsePort(flag, p));
  }
  if (!/^\S+$/.test(opts.name)) throw new Error('--name is required and must not contain spaces');
  if (opts.tcp.length + opts.udp.length === 0) throw new Error('at least one --tcp or --udp port is required');
  return opts;
}

function listenTcp(name: string, port: number): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((sock) => {
      sock.on('error', () => sock.destroy());
      sock.end(`${name} ${plainAddress(sock.remoteAddress)}\n`);
    });
    server.once('error', reject);
    server.listen({ host: '::', port, ipv6Only: false }, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

function listenUdp(name: string, port: number): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket({ type: 'udp6', ipv6Only: false });
    sock.on('message', (_msg, rinfo) => {
      sock.send(`${name} ${plainAddress(rinfo.address)}`, rinfo.port, rinfo.address);
    });
    sock.once('error', reject);
    sock.bind(port, '::', () => {
      sock.off('error', reject);
      // A reply to a vanished client must not take the pod down.
      sock.on('error', () => {});
      resolve(sock);
    });
  });
}

/** Starts every listener; resolves once all of them are bound. */
export async function startPodServer(opts: PodServerOptions): Promise<PodServer> {
  const tcp: net.Server[] = [];
  const udp: dgram.Socket[] = [];
  const close = async (): Promise<void> => {
    await Promise.all([
      ...tcp.map((s) => new Promise<void>((r) => s.close(() => r()))),
      ...udp.map((s) => new Promise<void>((r) => s.close(() => r()))),
    ]);
  };
  try {
    for (const p of opts.tcp) tcp.push(await listenTcp(opts.name, p));
    for (const p of opts.udp) udp.push(await listenUdp(opts.name, p));
  } catch (err) {
    await close();
    throw err;
  }
  return { close };
}
