// /debug/pprof/ with --profiling: Node's equivalents of Go's profiling handlers, on the metrics
// address. A CPU profile over ?seconds=N comes as a .cpuprofile and a heap snapshot as a
// .heapsnapshot; Chrome DevTools (Performance and Memory tabs) and VS Code open both.
import { Session } from 'node:inspector/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Handler } from './http.js';

const DEFAULT_SECONDS = 30;
const MAX_SECONDS = 300;

const INDEX = `kube-proxy-ts profiling (Node.js equivalents of /debug/pprof):
  /debug/pprof/profile?seconds=N   CPU profile over N seconds (default ${DEFAULT_SECONDS}, at most ${MAX_SECONDS}): a .cpuprofile
  /debug/pprof/heap                heap snapshot: a .heapsnapshot
Open either in Chrome DevTools (Performance / Memory tab, "Load") or in VS Code.
`;

function text(res: ServerResponse, code: number, body: string): void {
  res.writeHead(code, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' });
  res.end(body);
}

function attachment(res: ServerResponse, kind: string, body: string): void {
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Disposition': `attachment; filename="kube-proxy-ts-${stamp}.${kind}"` });
  res.end(body);
}

/** The /debug/pprof routes. One profile or snapshot at a time: a second request meanwhile gets 409. */
export function pprofRoutes(): Record<string, Handler> {
  let busy = false;
  const exclusive = (work: (req: IncomingMessage, res: ServerResponse) => Promise<void>): Handler => (req, res) => {
    if (busy) return text(res, 409, 'another profile is being taken; try again when it is done\n');
    busy = true;
    work(req, res)
      .catch((err: unknown) => {
        if (!res.headersSent) text(res, 500, `profiling failed: ${err instanceof Error ? err.message : String(err)}\n`);
      })
      .finally(() => (busy = false));
  };
  const profile = exclusive(async (req, res) => {
    const raw = new URL(req.url ?? '', 'http://x').searchParams.get('seconds');
    const seconds = raw === null ? DEFAULT_SECONDS : Number(raw);
    if (!Number.isFinite(seconds) || seconds <= 0 || seconds > MAX_SECONDS) {
      return text(res, 400, `seconds must be a number in (0, ${MAX_SECONDS}], got ${JSON.stringify(raw)}\n`);
    }
    const session = new Session();
    session.connect();
    try {
      await session.post('Profiler.enable');
      await session.post('Profiler.start');
      await new Promise((r) => setTimeout(r, seconds * 1000));
      const { profile: result } = await session.post('Profiler.stop');
      attachment(res, 'cpuprofile', JSON.stringify(result));
    } finally {
      session.disconnect();
    }
  });
  const heap = exclusive(async (_req, res) => {
    const session = new Session();
    session.connect();
    const chunks: string[] = [];
    session.on('HeapProfiler.addHeapSnapshotChunk', (m) => chunks.push(m.params.chunk));
    try {
      await session.post('HeapProfiler.takeHeapSnapshot', { reportProgress: false });
      attachment(res, 'heapsnapshot', chunks.join(''));
    } finally {
      session.disconnect();
    }
  });
  return {
    '/debug/pprof': (_req, res) => text(res, 200, INDEX),
    '/debug/pprof/': (_req, res) => text(res, 200, INDEX),
    '/debug/pprof/profile': profile,
    '/debug/pprof/heap': heap,
  };
}
