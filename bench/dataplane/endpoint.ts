// The endpoint pod's server of the data-plane benchmark, run inside the pod's namespace:
// `node endpoint.js --ping PORT --sink PORT`. On the ping port every line gets a one-line answer
// (latency, held connections); the sink port reads everything and, when the client ends its side,
// answers with the byte count it received (throughput), so a client knows all bytes arrived.
import { createServer } from 'node:net';

function arg(name: string): number {
  const i = process.argv.indexOf(`--${name}`);
  const port = Number(process.argv[i + 1]);
  if (i < 0 || !Number.isInteger(port)) throw new Error(`usage: endpoint.js --ping PORT --sink PORT (missing --${name})`);
  return port;
}

const ping = createServer((sock) => {
  sock.setNoDelay(true);
  sock.on('data', (chunk) => {
    for (let i = 0; i < chunk.length; i++) if (chunk[i] === 0x0a) sock.write('pong\n');
  });
  sock.on('error', () => sock.destroy());
});

const sink = createServer({ allowHalfOpen: true }, (sock) => {
  let bytes = 0;
  sock.on('data', (chunk) => (bytes += chunk.length));
  sock.on('end', () => sock.end(`${bytes}\n`));
  sock.on('error', () => sock.destroy());
});

let listening = 0;
const ready = (): void => {
  if (++listening === 2) process.stdout.write('ready\n');
};
ping.listen(arg('ping'), ready);
sink.listen(arg('sink'), ready);
