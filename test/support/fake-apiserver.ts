// A fake Kubernetes API server for tests. It follows the real wire protocol closely enough
// for a list/watch client: one global resourceVersion counter, paginated consistent LISTs,
// watch streams of JSON lines with bookmarks, 410 Gone for expired versions and continue
// tokens, label and field selectors, Status error bodies and bearer-token auth.
// Test controls mutate objects directly and inject faults into requests or open watches.
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { randomUUID } from 'node:crypto';
import type { KubeObject, ObjectKind, ObjectMeta } from '../../src/model/k8s.js';

type Meta = ObjectMeta & { creationTimestamp?: string };

export type Verb = 'list' | 'watch' | 'get' | 'create' | 'update' | 'delete';

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

export interface RequestRecord {
  kind: ObjectKind | undefined;
  verb: Verb | undefined;
  method: string;
  path: string;
  namespace: string | undefined;
  query: Record<string, string>;
  /** Date.now() when the request arrived. */
  time: number;
}

export interface RequestFilter {
  kind?: ObjectKind;
  verb?: Verb;
  /** true: only LIST pages that carry a continue token; false: only first pages. */
  continue?: boolean;
}

type Fault =
  | { type: 'drop' }
  | { type: 'hang' }
  | { type: 'status'; status: number; reason: string; message: string; retryAfter?: number };

interface PendingFault {
  fault: Fault;
  remaining: number;
  filter: RequestFilter;
}

interface KindInfo {
  plural: string;
  apiVersion: string;
  listKind: string;
  namespaced: boolean;
}

const KINDS: Record<ObjectKind, KindInfo> = {
  Service: { plural: 'services', apiVersion: 'v1', listKind: 'ServiceList', namespaced: true },
  EndpointSlice: {
    plural: 'endpointslices',
    apiVersion: 'discovery.k8s.io/v1',
    listKind: 'EndpointSliceList',
    namespaced: true,
  },
  Node: { plural: 'nodes', apiVersion: 'v1', listKind: 'NodeList', namespaced: false },
};

type ChangeType = 'ADDED' | 'MODIFIED' | 'DELETED';

interface HistoryEvent {
  rv: number;
  kind: ObjectKind;
  type: ChangeType;
  object: KubeObject;
  /** State before this change (absent for ADDED). */
  prev?: KubeObject;
}

interface Watcher {
  kind: ObjectKind;
  namespace: string | undefined;
  labels: LabelRequirement[];
  fields: FieldRequirement[];
  res: http.ServerResponse;
  silent: boolean;
  timers: NodeJS.Timeout[];
}

export class StatusError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

export function statusBody(code: number, reason: string, message: string): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

// ---- selectors ----

export interface LabelRequirement {
  key: string;
  op: 'exists' | 'notexists' | 'eq' | 'neq' | 'in' | 'notin';
  values: string[];
}

export interface FieldRequirement {
  field: 'metadata.name' | 'metadata.namespace';
  op: 'eq' | 'neq';
  value: string;
}

// Commas separate requirements except inside the parentheses of a set.
function splitTerms(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out.map((t) => t.trim()).filter((t) => t !== '');
}

const LABEL_KEY = /^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?\/)?[a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?$/;
const LABEL_VALUE = /^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?)?$/;

export function parseLabelSelector(sel: string): LabelRequirement[] {
  const reqs: LabelRequirement[] = [];
  for (const term of splitTerms(sel)) {
    let m: RegExpMatchArray | null;
    let req: LabelRequirement;
    if ((m = term.match(/^!\s*(\S+)$/))) req = { key: m[1]!, op: 'notexists', values: [] };
    else if ((m = term.match(/^(\S+)\s+(in|notin)\s*\(([^)]*)\)$/))) {
      const values = m[3]!.split(',').map((v) => v.trim());
      req = { key: m[1]!, op: m[2] === 'in' ? 'in' : 'notin', values };
    } else if ((m = term.match(/^([^!=\s]+)\s*(==|=|!=)\s*(\S*)$/))) {
      req = { key: m[1]!, op: m[2] === '!=' ? 'neq' : 'eq', values: [m[3]!] };
    } else if ((m = term.match(/^([^!=\s()]+)$/))) req = { key: m[1]!, op: 'exists', values: [] };
    else throw new StatusError(400, 'BadRequest', `unable to parse requirement: ${JSON.stringify(term)}`);
    if (!LABEL_KEY.test(req.key)) throw new StatusError(400, 'BadRequest', `invalid label key ${JSON.stringify(req.key)}`);
    for (const v of req.values) {
      if (!LABEL_VALUE.test(v)) throw new StatusError(400, 'BadRequest', `invalid label value ${JSON.stringify(v)}`);
    }
    reqs.push(req);
  }
  return reqs;
}

export function parseFieldSelector(sel: string): FieldRequirement[] {
  const reqs: FieldRequirement[] = [];
  for (const term of splitTerms(sel)) {
    const m = term.match(/^([^!=\s]+)\s*(==|=|!=)\s*(.*)$/);
    if (!m) throw new StatusError(400, 'BadRequest', `invalid field selector term ${JSON.stringify(term)}`);
    const field = m[1]!;
    if (field !== 'metadata.name' && field !== 'metadata.namespace') {
      throw new StatusError(400, 'BadRequest', `field label not supported: ${field}`);
    }
    reqs.push({ field, op: m[2] === '!=' ? 'neq' : 'eq', value: m[3]!.trim() });
  }
  return reqs;
}

function labelsMatch(reqs: LabelRequirement[], obj: KubeObject): boolean {
  const labels = obj.metadata?.labels ?? {};
  return reqs.every((r) => {
    const has = Object.prototype.hasOwnProperty.call(labels, r.key);
    const v = labels[r.key];
    switch (r.op) {
      case 'exists':
        return has;
      case 'notexists':
        return !has;
      case 'eq':
        return has && v === r.values[0];
      case 'neq':
        return !has || v !== r.values[0];
      case 'in':
        return has && r.values.includes(v!);
      case 'notin':
        return !has || !r.values.includes(v!);
    }
  });
}

function fieldsMatch(reqs: FieldRequirement[], obj: KubeObject): boolean {
  return reqs.every((r) => {
    const actual = (r.field === 'metadata.name' ? obj.metadata?.name : obj.metadata?.namespace) ?? '';
    return r.op === 'eq' ? actual === r.value : actual !== r.value;
  });
}

// ---- the server ----

function clone<T>(o: T): T {
  return structuredClone(o);
}

function keyOf(obj: KubeObject): string {
  return `${obj.metadata?.namespace ?? ''}/${obj.metadata?.name ?? ''}`;
}

interface ContinueToken {
  rv: number;
  start: string;
}

function encodeContinue(t: ContinueToken): string {
  return Buffer.from(JSON.stringify(t)).toString('base64url');
}

function decodeContinue(s: string): ContinueToken {
  try {
    const t = JSON.parse(Buffer.from(s, 'base64url').toString('utf8')) as ContinueToken;
    if (typeof t.rv === 'number' && typeof t.start === 'string') return t;
  } catch {
    // fall through
  }
  throw new StatusError(400, 'BadRequest', 'continue key is not valid');
}

interface Route {
  kind: ObjectKind;
  namespace: string | undefined;
  name: string | undefined;
}

function route(pathname: string): Route | undefined {
  const parts = pathname.split('/').filter((p) => p !== '');
  let rest: string[];
  if (parts[0] === 'api' && parts[1] === 'v1') rest = parts.slice(2);
  else if (parts[0] === 'apis' && parts[1] === 'discovery.k8s.io' && parts[2] === 'v1') rest = parts.slice(3);
  else return undefined;
  const groupVersion = parts[0] === 'api' ? 'v1' : 'discovery.k8s.io/v1';
  let namespace: string | undefined;
  if (rest[0] === 'namespaces' && rest.length >= 3) {
    namespace = decodeURIComponent(rest[1]!);
    rest = rest.slice(2);
  }
  if (rest.length < 1 || rest.length > 2) return undefined;
  const kind = (Object.keys(KINDS) as ObjectKind[]).find(
    (k) => KINDS[k].plural === rest[0] && KINDS[k].apiVersion === groupVersion,
  );
  if (!kind) return undefined;
  if (namespace !== undefined && !KINDS[kind].namespaced) return undefined;
  return { kind, namespace, name: rest[1] !== undefined ? decodeURIComponent(rest[1]) : undefined };
}

export class FakeApiServer {
  private readonly server: http.Server;
  private readonly sockets = new Set<Socket>();
  private readonly hung = new Set<http.ServerResponse>();
  private readonly watchers = new Set<Watcher>();
  private readonly stores: Record<ObjectKind, Map<string, KubeObject>> = {
    Service: new Map(),
    EndpointSlice: new Map(),
    Node: new Map(),
  };
  private history: HistoryEvent[] = [];
  /** Wire text (without kind/apiVersion) of each stored object a list has served. */
  private readonly serialized = new WeakMap<KubeObject, string>();
  /** Every change with a version above this one is still in history. */
  private compactedRv = 0;
  private rv = 1;
  private faults: PendingFault[] = [];
  private boundPort = 0;
  readonly requests: RequestRecord[] = [];
  /** events.k8s.io/v1 Events posted (and patched) by clients, by namespace/name. */
  readonly events = new Map<string, Record<string, unknown>>();
  readonly host: string;
  readonly token: string | undefined;
  bookmarkIntervalMs: number;
  historyLimit: number;
  pageCachedLists: boolean;

  private constructor(opts: FakeApiServerOptions) {
    this.host = opts.host ?? '127.0.0.1';
    this.token = opts.token;
    this.bookmarkIntervalMs = opts.bookmarkIntervalMs ?? 60_000;
    this.historyLimit = opts.historyLimit ?? 1000;
    this.pageCachedLists = opts.pageCachedLists ?? false;
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
    return String(this.rv);
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
    for (const w of this.watchers) this.closeWatcher(w, false);
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

  private normalize(kind: ObjectKind, obj: KubeObject): KubeObject {
    const info = KINDS[kind];
    const o = clone(obj);
    o.kind = kind;
    o.apiVersion = info.apiVersion;
    o.metadata = { ...(o.metadata ?? {}) };
    if (!o.metadata.name) throw new StatusError(422, 'Invalid', `${kind} has no metadata.name`);
    if (info.namespaced) o.metadata.namespace = o.metadata.namespace || 'default';
    else delete o.metadata.namespace;
    return o;
  }

  private record(kind: ObjectKind, type: ChangeType, object: KubeObject, prev?: KubeObject): void {
    const ev: HistoryEvent = { rv: this.rv, kind, type, object, ...(prev ? { prev } : {}) };
    this.history.push(ev);
    while (this.history.length > this.historyLimit) {
      this.compactedRv = this.history.shift()!.rv;
    }
    for (const w of this.watchers) {
      if (w.kind === kind) this.sendChange(w, ev);
    }
  }

  create(kind: ObjectKind, obj: KubeObject): KubeObject {
    const o = this.normalize(kind, obj);
    const key = keyOf(o);
    if (this.stores[kind].has(key)) {
      throw new StatusError(409, 'AlreadyExists', `${KINDS[kind].plural} "${o.metadata!.name}" already exists`);
    }
    this.rv++;
    o.metadata!.uid = randomUUID();
    o.metadata!.resourceVersion = String(this.rv);
    (o.metadata as Meta).creationTimestamp = new Date().toISOString();
    this.stores[kind].set(key, o);
    this.serialize(o);
    this.record(kind, 'ADDED', clone(o));
    return clone(o);
  }

  update(kind: ObjectKind, obj: KubeObject): KubeObject {
    const o = this.normalize(kind, obj);
    const key = keyOf(o);
    const prev = this.stores[kind].get(key);
    if (!prev) throw new StatusError(404, 'NotFound', `${KINDS[kind].plural} "${o.metadata!.name}" not found`);
    this.rv++;
    o.metadata!.uid = prev.metadata!.uid;
    (o.metadata as Meta).creationTimestamp = (prev.metadata as Meta).creationTimestamp;
    o.metadata!.resourceVersion = String(this.rv);
    this.stores[kind].set(key, o);
    this.serialize(o);
    this.record(kind, 'MODIFIED', clone(o), prev);
    return clone(o);
  }

  /** Deletes an object; returns its final state, or undefined when it did not exist. */
  remove(kind: ObjectKind, namespace: string | undefined, name: string): KubeObject | undefined {
    const key = `${KINDS[kind].namespaced ? namespace || 'default' : ''}/${name}`;
    const prev = this.stores[kind].get(key);
    if (!prev) return undefined;
    this.rv++;
    this.stores[kind].delete(key);
    const final = clone(prev);
    final.metadata!.resourceVersion = String(this.rv);
    this.record(kind, 'DELETED', final, prev);
    return clone(final);
  }

  /** Current objects of a kind, sorted by namespace/name like the real storage. */
  list(kind: ObjectKind): KubeObject[] {
    return [...this.stores[kind].entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, o]) => clone(o));
  }

  /** Forgets the event history and outstanding snapshots: resuming a watch or following a
   *  continue token from before now answers 410 Gone. */
  compact(): void {
    this.history = [];
    this.compactedRv = this.rv + 1;
    // Later changes get versions above the compaction point so new clients still work.
    this.rv++;
  }

  // ---- fault injection ----

  private addFault(fault: Fault, requests: number, filter: RequestFilter): void {
    this.faults.push({ fault, remaining: requests, filter });
  }

  /** Destroys every open connection now (open watches, idle keep-alive connections). */
  dropConnections(): void {
    for (const w of this.watchers) this.closeWatcher(w, false);
    for (const res of this.hung) res.destroy();
    this.hung.clear();
    for (const s of this.sockets) s.destroy();
  }

  /** The next `requests` matching requests get their connection destroyed unanswered. */
  dropNext(requests = 1, filter: RequestFilter = {}): void {
    this.addFault({ type: 'drop' }, requests, filter);
  }

  /** The next `requests` matching requests are accepted and never answered. */
  hang(requests = 1, filter: RequestFilter = {}): void {
    this.addFault({ type: 'hang' }, requests, filter);
  }

  /** Open watches stop sending anything (events and bookmarks) without closing. */
  hangWatches(): void {
    for (const w of this.watchers) w.silent = true;
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
    this.addFault(fault, opts.requests ?? 1, opts.filter ?? {});
  }

  /** The next matching requests answer 410 Gone (a LIST with a 410 Status, a WATCH with an
   *  ERROR event carrying it, as the real server does). */
  gone(opts: { requests?: number; filter?: RequestFilter } = {}): void {
    this.addFault(
      { type: 'status', status: 410, reason: 'Expired', message: 'injected: resource version too old' },
      opts.requests ?? 1,
      opts.filter ?? {},
    );
  }

  /** Open watches get an ERROR event with a 410 Status and end. */
  goneWatches(): void {
    for (const w of this.watchers) {
      this.writeEvent(w, 'ERROR', statusBody(410, 'Expired', 'too old resource version'));
      this.closeWatcher(w, true);
    }
  }

  /** Writes a line that is not JSON into every open watch. */
  garbageLine(): void {
    for (const w of this.watchers) {
      if (!w.silent) w.res.write('this is not {json\n');
    }
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
    return this.watchers.size;
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

    const fault = this.takeFault(rec);
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
        const obj = this.stores[r.kind].get(key);
        if (!obj) throw new StatusError(404, 'NotFound', `${KINDS[r.kind].plural} "${r.name}" not found`);
        this.sendJSON(res, 200, obj);
      } else if (verb === 'list') {
        this.sendList(res, this.doList(r, query));
      } else {
        this.startWatch(r, query, res);
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
          obj.metadata = { ...obj.metadata, namespace, resourceVersion: String(++this.rv) };
          this.events.set(`${namespace}/${n}`, obj);
          this.sendJSON(res, 201, obj);
          return;
        }
        if (req.headers['content-type'] !== 'application/merge-patch+json') {
          throw new StatusError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format`);
        }
        const cur = this.events.get(`${namespace}/${name}`);
        if (!cur) throw new StatusError(404, 'NotFound', `events.events.k8s.io "${name}" not found`);
        const merged = { ...cur, ...obj, metadata: { ...(cur.metadata as Meta), resourceVersion: String(++this.rv) } };
        this.events.set(`${namespace}/${name}`, merged);
        this.sendJSON(res, 200, merged);
      })
      .catch((err: unknown) => this.sendStatus(res, asStatus(err)));
  }

  private takeFault(rec: RequestRecord): Fault | undefined {
    const i = this.faults.findIndex((f) => matchesFilter(rec, f.filter));
    if (i < 0) return undefined;
    const f = this.faults[i]!;
    if (--f.remaining <= 0) this.faults.splice(i, 1);
    return f.fault;
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

  /** The objects of a kind as they were at version rv, rebuilt by undoing later history. */
  private stateAt(kind: ObjectKind, rv: number): Map<string, KubeObject> {
    const m = new Map(this.stores[kind]);
    for (let i = this.history.length - 1; i >= 0 && this.history[i]!.rv > rv; i--) {
      const e = this.history[i]!;
      if (e.kind !== kind) continue;
      if (e.type === 'ADDED') m.delete(keyOf(e.object));
      else m.set(keyOf(e.object), e.prev!);
    }
    return m;
  }

  private doList(r: Route, q: Record<string, string>): { kind: string; apiVersion: string; metadata: Record<string, unknown>; items: KubeObject[] } {
    const labels = parseLabelSelector(q.labelSelector ?? '');
    const fields = parseFieldSelector(q.fieldSelector ?? '');
    let limit = 0;
    if (q.limit !== undefined) {
      limit = Number(q.limit);
      if (!Number.isInteger(limit) || limit < 0) throw new StatusError(400, 'BadRequest', `invalid limit ${q.limit}`);
    }
    let snapshotRv = this.rv;
    let start = '';
    if (q.continue) {
      const tok = decodeContinue(q.continue);
      if (tok.rv < this.compactedRv) {
        throw new StatusError(410, 'Expired', 'continue token is too old for a consistent list; start a new list');
      }
      snapshotRv = tok.rv;
      start = tok.start;
    } else if (q.resourceVersion && q.resourceVersion !== '0') {
      const want = Number(q.resourceVersion);
      if (!Number.isInteger(want) || want < 0) {
        throw new StatusError(400, 'BadRequest', `invalid resourceVersion ${q.resourceVersion}`);
      }
      if (want < this.compactedRv) throw new StatusError(410, 'Expired', `too old resource version: ${want}`);
      if (want > this.rv) throw new StatusError(504, 'Timeout', `too large resource version: ${want}`);
      // With a limit (or an explicit Exact match) the real server serves that exact snapshot.
      if (limit > 0 || q.resourceVersionMatch === 'Exact') snapshotRv = want;
    } else if (q.resourceVersion === '0' && !this.pageCachedLists) {
      limit = 0;
    }
    const state = snapshotRv === this.rv ? this.stores[r.kind] : this.stateAt(r.kind, snapshotRv);
    const keys = [...state.keys()].filter((k) => k > start).sort();
    const items: KubeObject[] = [];
    let cont: string | undefined;
    let remaining = 0;
    for (let i = 0; i < keys.length; i++) {
      const o = state.get(keys[i]!)!;
      if (r.namespace !== undefined && o.metadata?.namespace !== r.namespace) continue;
      if (!labelsMatch(labels, o) || !fieldsMatch(fields, o)) continue;
      if (limit > 0 && items.length === limit) {
        cont = encodeContinue({ rv: snapshotRv, start: keys[i - 1]! });
        remaining = keys.length - i;
        break;
      }
      items.push(o);
    }
    const metadata: Record<string, unknown> = { resourceVersion: String(snapshotRv) };
    if (cont) {
      metadata.continue = cont;
      metadata.remainingItemCount = remaining;
    }
    return { kind: KINDS[r.kind].listKind, apiVersion: KINDS[r.kind].apiVersion, metadata, items };
  }

  // Like the real server's watch cache, each stored object is serialized once, when it is
  // written, and its text reused by every list: serializing 10,000 slices anew for each list
  // took seconds, and at the first list took the CPU from the proxy it was feeding (a real API
  // server does that work on its own machine). Stored objects are never changed in place (a
  // write stores a new one), so the text stays right.
  private serialize(o: KubeObject): string {
    let text = this.serialized.get(o);
    if (text === undefined) {
      // Items of a typed list carry no kind/apiVersion on the wire.
      const { kind: _k, apiVersion: _a, ...rest } = o;
      text = JSON.stringify(rest);
      this.serialized.set(o, text);
    }
    return text;
  }

  private sendList(res: http.ServerResponse, list: { kind: string; apiVersion: string; metadata: Record<string, unknown>; items: KubeObject[] }): void {
    const parts: string[] = [];
    for (const o of list.items) parts.push(this.serialize(o));
    const head = JSON.stringify({ kind: list.kind, apiVersion: list.apiVersion, metadata: list.metadata });
    const data = `${head.slice(0, -1)},"items":[${parts.join(',')}]}`;
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) });
    res.end(data);
  }

  private startWatch(r: Route, q: Record<string, string>, res: http.ServerResponse): void {
    const labels = parseLabelSelector(q.labelSelector ?? '');
    const fields = parseFieldSelector(q.fieldSelector ?? '');
    const w: Watcher = { kind: r.kind, namespace: r.namespace, labels, fields, res, silent: false, timers: [] };
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    const from = q.resourceVersion ?? '';
    if (from === '' || from === '0') {
      // No version: the current state as synthetic ADDED events, then live changes.
      for (const o of this.list(r.kind)) {
        if (this.visible(w, o)) this.writeEvent(w, 'ADDED', o);
      }
    } else {
      const want = Number(from);
      if (!Number.isInteger(want) || want < 0) {
        this.writeEvent(w, 'ERROR', statusBody(400, 'BadRequest', `invalid resourceVersion ${from}`));
        res.end();
        return;
      }
      if (want < this.compactedRv) {
        this.writeEvent(w, 'ERROR', statusBody(410, 'Expired', `too old resource version: ${want} (${this.compactedRv})`));
        res.end();
        return;
      }
      for (const ev of this.history) {
        if (ev.rv > want && ev.kind === r.kind) this.sendChange(w, ev);
      }
    }
    this.watchers.add(w);
    res.on('close', () => this.closeWatcher(w, false));
    const timeout = Number(q.timeoutSeconds ?? '0');
    if (timeout > 0) w.timers.push(setTimeout(() => this.closeWatcher(w, true), timeout * 1000));
    if (q.allowWatchBookmarks === 'true' || q.allowWatchBookmarks === '1') {
      w.timers.push(
        setInterval(() => {
          if (!w.silent) {
            this.writeEvent(w, 'BOOKMARK', {
              kind: r.kind,
              apiVersion: KINDS[r.kind].apiVersion,
              metadata: { resourceVersion: String(this.rv) },
            });
          }
        }, this.bookmarkIntervalMs),
      );
    }
  }

  private visible(w: Watcher, o: KubeObject | undefined): boolean {
    if (!o) return false;
    if (w.namespace !== undefined && o.metadata?.namespace !== w.namespace) return false;
    return labelsMatch(w.labels, o) && fieldsMatch(w.fields, o);
  }

  // An object entering or leaving a watch's selector appears as ADDED or DELETED, like the real server.
  private sendChange(w: Watcher, ev: HistoryEvent): void {
    if (w.silent) return;
    const before = ev.type !== 'ADDED' && this.visible(w, ev.prev);
    const after = ev.type !== 'DELETED' && this.visible(w, ev.object);
    if (ev.type === 'DELETED') {
      if (before) this.writeEvent(w, 'DELETED', ev.object);
    } else if (before && after) this.writeEvent(w, 'MODIFIED', ev.object);
    else if (after) this.writeEvent(w, 'ADDED', ev.object);
    else if (before) this.writeEvent(w, 'DELETED', ev.object);
  }

  private writeEvent(w: Watcher, type: string, object: unknown): void {
    w.res.write(JSON.stringify({ type, object }) + '\n');
  }

  private closeWatcher(w: Watcher, graceful: boolean): void {
    if (!this.watchers.delete(w)) return;
    for (const t of w.timers) clearTimeout(t);
    w.timers = [];
    if (graceful) w.res.end();
    else w.res.destroy();
  }
}

function matchesFilter(r: RequestRecord, f: RequestFilter): boolean {
  if (f.kind !== undefined && r.kind !== f.kind) return false;
  if (f.verb !== undefined && r.verb !== f.verb) return false;
  if (f.continue !== undefined && Boolean(r.query.continue) !== f.continue) return false;
  return true;
}

function asStatus(err: unknown): StatusError {
  if (err instanceof StatusError) return err;
  if (err instanceof SyntaxError) return new StatusError(400, 'BadRequest', `invalid JSON body: ${err.message}`);
  return new StatusError(500, 'InternalError', String(err));
}

// ---- consumer side ----

export interface RecordedEvent {
  kind: ObjectKind;
  type: ChangeType;
  object: KubeObject;
}

/** A SourceHandler that rebuilds the view a consumer would have and flags inconsistent
 *  events (ADDED for a known object, MODIFIED or DELETED for an unknown one, double sync). */
export class ViewRecorder {
  readonly events: RecordedEvent[] = [];
  readonly synced: ObjectKind[] = [];
  readonly problems: string[] = [];
  private readonly views: Record<ObjectKind, Map<string, KubeObject>> = {
    Service: new Map(),
    EndpointSlice: new Map(),
    Node: new Map(),
  };

  onEvent(e: RecordedEvent): void {
    this.events.push(e);
    const view = this.views[e.kind];
    const key = keyOf(e.object);
    const known = view.has(key);
    if (e.type === 'ADDED' && known) this.problems.push(`ADDED for known ${e.kind} ${key}`);
    if (e.type !== 'ADDED' && !known) this.problems.push(`${e.type} for unknown ${e.kind} ${key}`);
    if (e.type === 'DELETED') view.delete(key);
    else view.set(key, e.object);
  }

  onSynced(kind: ObjectKind): void {
    if (this.synced.includes(kind)) this.problems.push(`synced twice: ${kind}`);
    this.synced.push(kind);
  }

  /** key → resourceVersion of what the consumer currently believes. */
  view(kind: ObjectKind): Record<string, string> {
    return versions([...this.views[kind].values()]);
  }
}

/** key → resourceVersion of a list of objects, for comparing views. */
export function versions(objs: KubeObject[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const o of [...objs].sort((a, b) => (keyOf(a) < keyOf(b) ? -1 : 1))) {
    out[keyOf(o)] = o.metadata?.resourceVersion ?? '';
  }
  return out;
}

/** Polls until cond() holds; rejects with `what` after timeoutMs. */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = 8000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
