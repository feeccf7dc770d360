// A fake Kubernetes API server for tests. It follows the real wire protocol closely enough
// for a list/watch client: one global resourceVersion counter, paginated consistent LISTs,
// watch streams of JSON lines with bookmarks, 410 Gone for expired versions and continue
// tokens, label and field selectors, Status error bodies and bearer-token auth.
// Test controls mutate objects directly and inject faults into requests or open watches.
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { KubeObject, ObjectKind } from '../../src/model/k8s.js';
import { FaultQueue, type Fault } from './apiserver/faults.js';
import { ObjectStore, type ObjectList } from './apiserver/object-store.js';
import { matchesFilter, type RequestFilter, type RequestRecord, type Verb } from './apiserver/requests.js';
import { KINDS, route, type Meta } from './apiserver/resources.js';
import { asStatus, StatusError, statusBody } from './apiserver/status.js';
import { WatchStreams } from './apiserver/watch-streams.js';

export interface FakeApiServerOptions {
  /** Address to bind, 127.0.0.1 by default. */
  host?: string;
  /** 0 (any free port) by default. */
  port?: number;
  /** When set, every request must carry `Authorization: Bearer <token>`. */
  token?: string;
  /** How often open watches that asked for bookmarks get one. Default 60 s. */
  bookmarkIntervalMs?: number;
  /** How many change events are kept for resuming watches. Default 1000. */
  historyLimit?: number;
  /**
   * Page lists at resourceVersion=0 too. The real server answers those from its watch cache
   * in one response whatever the limit (kubernetes#70735); false (the default) does the same.
   */
  pageCachedLists?: boolean;
}

export class FakeApiServer {
  private readonly server: http.Server;
  private readonly sockets = new Set<Socket>();
  private readonly hung = new Set<http.ServerResponse>();
  private readonly store: ObjectStore;
  private readonly watches: WatchStreams;
  private readonly faults = new FaultQueue();
  private boundPort = 0;
  readonly requests: RequestRecord[] = [];
  /** events.k8s.io/v1 Events posted (and patched) by clients, by namespace/name. */
  readonly events = new Map<string, Record<string, unknown>>();
  readonly host: string;
  readonly token: string | undefined;

  private constructor(opts: FakeApiServerOptions) {
    this.host = opts.host ?? '127.0.0.1';
    this.token = opts.token;
    this.store = new ObjectStore(opts.historyLimit ?? 1000, opts.pageCachedLists ?? false, (ev) => this.watches.broadcast(ev));
    this.watches = new WatchStreams(this.store, opts.bookmarkIntervalMs ?? 60_000);
    this.server = http.createServer({ noDelay: true }, (req, res) => this.handle(req, res));
    this.server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  static async start(opts: FakeApiServerOptions = {}): Promise<FakeApiServer> {
    const s = new FakeApiServer(opts);
    await s.listen(opts.port ?? 0);
    return s;
  }

  get port(): number {
    return this.boundPort;
  }

  get url(): string {
    const h = this.host.includes(':') ? `[${this.host}]` : this.host;
    return `http://${h}:${this.boundPort}`;
  }

  /** The current global resourceVersion. */
  get resourceVersion(): string {
    return String(this.store.rv);
  }

  private listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once('error', onError);
      this.server.listen(port, this.host, () => {
        this.server.off('error', onError);
        this.boundPort = (this.server.address() as AddressInfo).port;
        resolve();
      });
    });
  }

  /** Closes every connection and the listener. Objects are kept (see restart). */
  async stop(): Promise<void> {
    this.watches.closeAll();
    for (const res of this.hung) res.destroy();
    this.hung.clear();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  /** Simulates an API server restart: connections die, the port is refused for downtimeMs,
   *  then the same port serves the same objects (they live in "etcd"). */
  async restart(downtimeMs = 0): Promise<void> {
    await this.stop();
    if (downtimeMs > 0) await new Promise((r) => setTimeout(r, downtimeMs));
    await this.listen(this.boundPort);
  }

  // ---- object controls ----

  create(kind: ObjectKind, obj: KubeObject): KubeObject {
    return this.store.create(kind, obj);
  }

  update(kind: ObjectKind, obj: KubeObject): KubeObject {
    return this.store.update(kind, obj);
  }

  /** Deletes an object; returns its final state, or undefined when it did not exist. */
  remove(kind: ObjectKind, namespace: string | undefined, name: string): KubeObject | undefined {
    return this.store.remove(kind, namespace, name);
  }

  /** Current objects of a kind, sorted by namespace/name like the real storage. */
  list(kind: ObjectKind): KubeObject[] {
    return this.store.list(kind);
  }

  /** Forgets the event history and outstanding snapshots: resuming a watch or following a
   *  continue token from before now answers 410 Gone. */
  compact(): void {
    this.store.compact();
  }

  // ---- fault injection ----

  /** Destroys every open connection now (open watches, idle keep-alive connections). */
  dropConnections(): void {
    this.watches.closeAll();
    for (const res of this.hung) res.destroy();
    this.hung.clear();
    for (const s of this.sockets) s.destroy();
  }

  /** The next `requests` matching requests get their connection destroyed unanswered. */
  dropNext(requests = 1, filter: RequestFilter = {}): void {
    this.faults.add({ type: 'drop' }, requests, filter);
  }

  /** The next `requests` matching requests are accepted and never answered. */
  hang(requests = 1, filter: RequestFilter = {}): void {
    this.faults.add({ type: 'hang' }, requests, filter);
  }

  /** Open watches stop sending anything (events and bookmarks) without closing. */
  hangWatches(): void {
    this.watches.silenceAll();
  }

  /** The next matching requests fail with an HTTP status (e.g. 500, or 429 with Retry-After). */
  fail(
    status: number,
    opts: { retryAfter?: number; requests?: number; filter?: RequestFilter; message?: string; reason?: string } = {},
  ): void {
    const reason = opts.reason ?? (status === 429 ? 'TooManyRequests' : status >= 500 ? 'InternalError' : 'BadRequest');
    const fault: Fault = {
      type: 'status',
      status,
      reason,
      message: opts.message ?? `injected failure ${status}`,
      ...(opts.retryAfter !== undefined ? { retryAfter: opts.retryAfter } : {}),
    };
    this.faults.add(fault, opts.requests ?? 1, opts.filter ?? {});
  }

  /** The next matching requests answer 410 Gone (a LIST with a 410 Status, a WATCH with an
   *  ERROR event carrying it, as the real server does). */
  gone(opts: { requests?: number; filter?: RequestFilter } = {}): void {
    this.faults.add(
      { type: 'status', status: 410, reason: 'Expired', message: 'injected: resource version too old' },
      opts.requests ?? 1,
      opts.filter ?? {},
    );
  }

  /** Open watches get an ERROR event with a 410 Status and end. */
  goneWatches(): void {
    this.watches.expireAll();
  }

  /** Writes a line that is not JSON into every open watch. */
  garbageLine(): void {
    this.watches.writeGarbage();
  }

  /** Recorded requests matching the filter, oldest first. */
  requestsMatching(filter: RequestFilter = {}): RequestRecord[] {
    return this.requests.filter((r) => matchesFilter(r, filter));
  }

  /** Number of recorded requests matching the filter. */
  count(filter: RequestFilter = {}): number {
    return this.requests.filter((r) => matchesFilter(r, filter)).length;
  }

  /** Number of watch streams currently open. */
  get openWatches(): number {
    return this.watches.size;
  }

  // ---- HTTP handling ----

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://fake');
    const query: Record<string, string> = {};
    for (const [k, v] of url.searchParams) query[k] = v;
    const r = route(url.pathname);
    const method = req.method ?? 'GET';
    const isWatch = query.watch === 'true' || query.watch === '1';
    let verb: Verb | undefined;
    if (r) {
      if (method === 'GET') verb = r.name !== undefined ? 'get' : isWatch ? 'watch' : 'list';
      else if (method === 'POST' && r.name === undefined) verb = 'create';
      else if (method === 'PUT' && r.name !== undefined) verb = 'update';
      else if (method === 'DELETE' && r.name !== undefined) verb = 'delete';
    }
    const rec: RequestRecord = {
      kind: r?.kind,
      verb,
      method,
      path: url.pathname,
      namespace: r?.namespace,
      query,
      time: Date.now(),
    };
    this.requests.push(rec);

    const fault = this.faults.take(rec);
    if (fault?.type === 'drop') {
      req.socket.destroy();
      return;
    }
    if (fault?.type === 'hang') {
      this.hung.add(res);
      res.on('close', () => this.hung.delete(res));
      return;
    }
    if (this.token !== undefined && req.headers.authorization !== `Bearer ${this.token}`) {
      this.sendStatus(res, new StatusError(401, 'Unauthorized', 'Unauthorized'));
      return;
    }
    if (fault?.type === 'status') {
      if (verb === 'watch' && fault.status === 410) {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ type: 'ERROR', object: statusBody(410, fault.reason, fault.message) }) + '\n');
        return;
      }
      const headers: Record<string, string> = {};
      if (fault.retryAfter !== undefined) headers['Retry-After'] = String(fault.retryAfter);
      this.sendStatus(res, new StatusError(fault.status, fault.reason, fault.message), headers);
      return;
    }

    if (url.pathname === '/healthz' || url.pathname === '/livez' || url.pathname === '/readyz') {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.end('ok');
      return;
    }
    if (url.pathname === '/version') {
      this.sendJSON(res, 200, { major: '1', minor: '31', gitVersion: 'v1.31.0-fake', platform: 'linux/amd64' });
      return;
    }
    const ev = /^\/apis\/events\.k8s\.io\/v1\/namespaces\/([^/]+)\/events(?:\/([^/]+))?$/.exec(url.pathname);
    if (ev && ((method === 'POST' && !ev[2]) || (method === 'PATCH' && ev[2]))) {
      this.handleEvent(req, res, decodeURIComponent(ev[1]!), ev[2] === undefined ? undefined : decodeURIComponent(ev[2]));
      return;
    }
    if (!r || !verb) {
      this.sendStatus(res, new StatusError(404, 'NotFound', `the server could not find the requested resource`));
      return;
    }
    if (verb === 'create' || verb === 'update') {
      this.readBody(req)
        .then((body) => {
          const obj = JSON.parse(body) as KubeObject;
          if (r.namespace !== undefined) obj.metadata = { ...(obj.metadata ?? {}), namespace: r.namespace };
          if (verb === 'update' && obj.metadata?.name !== r.name) {
            throw new StatusError(400, 'BadRequest', 'the name of the object does not match the name in the URL');
          }
          const out = verb === 'create' ? this.create(r.kind, obj) : this.update(r.kind, obj);
          this.sendJSON(res, verb === 'create' ? 201 : 200, out);
        })
        .catch((err: unknown) => this.sendStatus(res, asStatus(err)));
      return;
    }
    try {
      if (verb === 'delete') {
        const out = this.remove(r.kind, r.namespace, r.name!);
        if (!out) throw new StatusError(404, 'NotFound', `${KINDS[r.kind].plural} "${r.name}" not found`);
        this.sendJSON(res, 200, out);
      } else if (verb === 'get') {
        const key = `${r.namespace ?? ''}/${r.name}`;
        const obj = this.store.get(r.kind, key);
        if (!obj) throw new StatusError(404, 'NotFound', `${KINDS[r.kind].plural} "${r.name}" not found`);
        this.sendJSON(res, 200, obj);
      } else if (verb === 'list') {
        this.sendList(res, this.store.listPage(r, query));
      } else {
        this.watches.start(r, query, res);
      }
    } catch (err) {
      this.sendStatus(res, asStatus(err));
    }
  }

  /** Creates an Event (POST), or merges a JSON merge patch into one (PATCH). */
  private handleEvent(req: http.IncomingMessage, res: http.ServerResponse, namespace: string, name: string | undefined): void {
    this.readBody(req)
      .then((body) => {
        const obj = JSON.parse(body) as Record<string, unknown> & { metadata?: Meta };
        if (name === undefined) {
          const n = obj.metadata?.name ?? '';
          if (n === '') throw new StatusError(422, 'Invalid', 'metadata.name: Required value');
          if (this.events.has(`${namespace}/${n}`)) throw new StatusError(409, 'AlreadyExists', `events.events.k8s.io "${n}" already exists`);
          obj.metadata = { ...obj.metadata, namespace, resourceVersion: String(++this.store.rv) };
          this.events.set(`${namespace}/${n}`, obj);
          this.sendJSON(res, 201, obj);
          return;
        }
        if (req.headers['content-type'] !== 'application/merge-patch+json') {
          throw new StatusError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format`);
        }
        const cur = this.events.get(`${namespace}/${name}`);
        if (!cur) throw new StatusError(404, 'NotFound', `events.events.k8s.io "${name}" not found`);
        const merged = { ...cur, ...obj, metadata: { ...(cur.metadata as Meta), resourceVersion: String(++this.store.rv) } };
        this.events.set(`${namespace}/${name}`, merged);
        this.sendJSON(res, 200, merged);
      })
      .catch((err: unknown) => this.sendStatus(res, asStatus(err)));
  }

  private readBody(req: http.IncomingMessage): Promise<string> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      req.on('error', reject);
    });
  }

  private sendJSON(res: http.ServerResponse, code: number, body: unknown, headers: Record<string, string> = {}): void {
    const data = JSON.stringify(body);
    res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data), ...headers });
    res.end(data);
  }

  private sendStatus(res: http.ServerResponse, err: StatusError, headers: Record<string, string> = {}): void {
    this.sendJSON(res, err.code, statusBody(err.code, err.reason, err.message), headers);
  }

  private sendList(res: http.ServerResponse, list: ObjectList): void {
    const parts: string[] = [];
    for (const o of list.items) parts.push(this.store.serialize(o));
    const head = JSON.stringify({ kind: list.kind, apiVersion: list.apiVersion, metadata: list.metadata });
    const data = `${head.slice(0, -1)},"items":[${parts.join(',')}]}`;
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) });
    res.end(data);
  }
}
