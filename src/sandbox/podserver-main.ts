// Standalone pod server: `node dist/src/sandbox/podserver-main.js --name web-1 --tcp 80,8080 --udp 53`.
// Prints "ready" on stdout once every port listens; exits 2 on bad arguments, 1 if a port cannot be bound.
import { parsePodServerArgs, startPodServer } from './podserver.js';

let opts;
try {
  opts = parsePodServerArgs(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`podserver: ${(err as Error).message}\n`);
  process.exit(2);
}

startPodServer(opts).then(
  () => process.stdout.write('ready\n'),
  (err: Error) => {
    process.stderr.write(`podserver ${opts.name}: ${err.message}\n`);
    process.exit(1);
  },
);
