// The client pod's side of the data-plane benchmark, run inside the pod's namespace; prints one
// JSON line per run:
//   client.js latency HOST PORT N          N sequential connections: connect, "ping", "pong", close
//   client.js stream HOST PORT STREAMS MIB STREAMS parallel connections each sending MIB MiB
//   client.js hold HOST PORT N             N concurrent connections, each answered once; then
//                                          held until stdin ends, pinged again, closed
//   client.js first HOST PORT              a connect attempt every 5 ms until one is answered;
//                                          prints the wall-clock time of that answer
import { connect, type Socket } from 'node:net';

const [cmd, host = '', portText = '', ...rest] = process.argv.slice(2);
const port = Number(portText);

function open(timeoutMs = 5000): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host, port, noDelay: true });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('connect timeout'));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      resolve(sock);
    });
    sock.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** Sends one line and waits for one line back. */
function ping(sock: Socket, timeoutMs = 5000): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = '';
    const timer = setTimeout(() => done(new Error('no answer')), timeoutMs);
    const onData = (chunk: Buffer): void => {
      got += chunk.toString();
      if (got.includes('\n')) done();
    };
    const onEnd = (): void => done(new Error('closed'));
    const done = (err?: Error): void => {
      clearTimeout(timer);
      sock.off('data', onData).off('error', done).off('end', onEnd);
      if (err) reject(err);
      else resolve();
    };
    sock.on('data', onData).once('error', done).once('end', onEnd);
    sock.write('ping\n');
  });
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
}

async function latency(n: number): Promise<object> {
  const ms: number[] = [];
  let errors = 0;
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    try {
      const sock = await open();
      await ping(sock);
      sock.destroy();
      ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
    } catch {
      errors++;
    }
  }
  ms.sort((a, b) => a - b);
  return { n, errors, p50ms: quantile(ms, 0.5), p99ms: quantile(ms, 0.99) };
}

/** One connection sending `bytes`; resolves when the sink confirms it received them all. */
async function sendAll(bytes: number): Promise<void> {
  const sock = await open();
  const chunk = Buffer.alloc(256 * 1024, 0x61);
  let answer = '';
  const confirmed = new Promise<void>((resolve, reject) => {
    sock.on('data', (d: Buffer) => (answer += d.toString()));
    sock.once('end', () => (Number(answer.trim()) === bytes ? resolve() : reject(new Error(`sink got ${answer.trim()} of ${bytes}`))));
    sock.once('error', reject);
  });
  for (let sent = 0; sent < bytes; sent += chunk.length) {
    if (!sock.write(chunk)) await new Promise((r) => sock.once('drain', r));
  }
  sock.end();
  await confirmed;
}

async function stream(streams: number, mib: number): Promise<object> {
  const bytes = mib * 1024 * 1024;
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: streams }, () => sendAll(bytes)));
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return { streams, bytes: streams * bytes, seconds: s, mbPerS: (streams * bytes) / 1e6 / s };
}

async function hold(n: number): Promise<object> {
  const opened = await Promise.allSettled(
    Array.from({ length: n }, async () => {
      const sock = await open(10000);
      await ping(sock, 10000);
      return sock;
    }),
  );
  const socks = opened.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const firstErrors = opened.length - socks.length;
  process.stdout.write(`${JSON.stringify({ held: socks.length, errors: firstErrors })}\n`);
  await new Promise((resolve) => process.stdin.once('end', resolve).resume());
  const again = await Promise.allSettled(socks.map((s) => ping(s, 10000)));
  for (const s of socks) s.destroy();
  return { held: socks.length, errors: firstErrors, stillAnswering: again.filter((r) => r.status === 'fulfilled').length };
}

async function first(): Promise<object> {
  return new Promise((resolve) => {
    let done = false;
    const attempt = (): void => {
      open(1000)
        .then(async (sock) => {
          await ping(sock, 1000);
          sock.destroy();
          if (done) return;
          done = true;
          clearInterval(timer);
          resolve({ answeredAt: Date.now() });
        })
        .catch(() => undefined);
    };
    const timer = setInterval(attempt, 5);
    process.stdout.write('polling\n');
    attempt();
  });
}

const runs: Record<string, () => Promise<object>> = {
  latency: () => latency(Number(rest[0])),
  stream: () => stream(Number(rest[0]), Number(rest[1])),
  hold: () => hold(Number(rest[0])),
  first: () => first(),
};
const run = cmd === undefined ? undefined : runs[cmd];
if (!run || !host || !Number.isInteger(port)) {
  process.stderr.write('usage: client.js latency|stream|hold|first HOST PORT [ARGS]\n');
  process.exit(2);
}
process.stdout.write(`${JSON.stringify(await run())}\n`);
process.exit(0);
