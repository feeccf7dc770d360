// A Source backed by a directory of manifests (YAML or JSON), for standalone use, demos
// and tests. The directory is the whole truth: every scan rebuilds the set of objects and
// the difference to what was delivered before becomes ADDED / MODIFIED / DELETED events.
import { promises as fsp, watch, type FSWatcher } from 'node:fs';
import { extname, join } from 'node:path';
import { log } from '../log.js';
import type { KubeObject, ObjectKind } from '../model/k8s.js';
import { canonicalJSON, errorMessage, MAX_MANIFEST_BYTES, objectName, parseManifests, type Entry } from './manifest-parse.js';
import type { EventType, Source, SourceEvent, SourceHandler } from './types.js';

export interface ManifestsSourceOptions {
  /** Quiet period after a change notification before the directory is rescanned. */
  debounceMs?: number;
  /** Period of the safety-net rescan for changes fs.watch misses; 0 disables it. */
  rescanIntervalMs?: number;
  /** A changed file is read once unmodified for this long (it may be mid-write). Default 250. */
  stableMs?: number;
}

const DEFAULT_DEBOUNCE_MS = 200;
const DEFAULT_RESCAN_INTERVAL_MS = 10_000;
const DEFAULT_STABLE_MS = 250;
const EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

// Delivery order within a scan: the Node first, so that topology is known before the
// services and endpoints that depend on it.
const KIND_ORDER: readonly ObjectKind[] = ['Node', 'Service', 'EndpointSlice'];

interface FileState {
  /** The last text read, so an unchanged file is neither parsed nor reported again. */
  text: string;
  /** Objects of the last successful parse (kept while the file is broken). */
  objects: Map<string, Entry>;
  broken: boolean;
}

interface Delivered {
  kind: ObjectKind;
  /** Canonical JSON of the object as read, before resourceVersion synthesis. */
  json: string;
  object: KubeObject;
}

export class ManifestsSource implements Source {
  private readonly debounceMs: number;
  private readonly rescanIntervalMs: number;
  private readonly stableMs: number;
  private handler: SourceHandler | null = null;
  private stopped = false;
  private watcher: FSWatcher | null = null;
  private debounceTimer: NodeJS.Timeout | null = null;
  private rescanTimer: NodeJS.Timeout | null = null;
  private readonly files = new Map<string, FileState>();
  /** Files that vanished recently, and when they were first missed. */
  private readonly missingSince = new Map<string, number>();
  private readonly delivered = new Map<string, Delivered>();
  private duplicateWarnings = new Set<string>();
  private resourceVersion = 0;
  // Scans run one after another; a request while one is queued joins it.
  private chain: Promise<void> = Promise.resolve();
  private queued: Promise<void> | null = null;

  constructor(
    private readonly dir: string,
    opts: ManifestsSourceOptions = {},
  ) {
    this.debounceMs = opts.debounceMs ?? DEFAULT_DEBOUNCE_MS;
    this.rescanIntervalMs = opts.rescanIntervalMs ?? DEFAULT_RESCAN_INTERVAL_MS;
    this.stableMs = opts.stableMs ?? DEFAULT_STABLE_MS;
  }

  async start(handler: SourceHandler): Promise<void> {
    if (this.handler) throw new Error('manifests source already started');
    this.handler = handler;
    try {
      await fsp.readdir(this.dir);
    } catch (err) {
      this.handler = null;
      throw new Error(`cannot read manifests directory ${this.dir}: ${errorMessage(err)}`);
    }
    // Watch before the first scan so that nothing written in between goes unnoticed.
    this.startWatcher();
    await this.enqueue(true);
    if (this.rescanIntervalMs > 0 && !this.stopped) {
      this.rescanTimer = setInterval(() => void this.resync(), this.rescanIntervalMs);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watcher?.close();
    this.watcher = null;
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    if (this.rescanTimer) clearInterval(this.rescanTimer);
    this.debounceTimer = null;
    this.rescanTimer = null;
    await this.chain;
  }

  /** Rescans the directory now; resolves once the resulting events have been delivered. */
  resync(): Promise<void> {
    if (!this.handler || this.stopped) return Promise.resolve();
    return this.enqueue(false);
  }

  private enqueue(initial: boolean): Promise<void> {
    if (this.queued && !initial) return this.queued;
    const p = this.chain.then(() => {
      if (this.queued === p) this.queued = null;
      return this.scan(initial);
    });
    if (!initial) this.queued = p;
    this.chain = p.catch((err: unknown) => {
      log.error('manifests scan failed', { dir: this.dir, error: errorMessage(err) });
    });
    return this.chain;
  }

  private startWatcher(): void {
    try {
      this.watcher = watch(this.dir, { persistent: true }, () => this.onWatchEvent());
      this.watcher.on('error', (err) => {
        log.warn('watching manifests directory failed; relying on periodic rescans', {
          dir: this.dir,
          error: errorMessage(err),
        });
        this.watcher?.close();
        this.watcher = null;
      });
    } catch (err) {
      log.warn('cannot watch manifests directory; relying on periodic rescans', {
        dir: this.dir,
        error: errorMessage(err),
      });
    }
  }

  private onWatchEvent(): void {
    this.scheduleRescan(this.debounceMs);
  }

  private scheduleRescan(ms: number): void {
    if (this.stopped) return;
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => {
      this.debounceTimer = null;
      void this.resync();
    }, ms);
  }

  private async scan(initial: boolean): Promise<void> {
    if (this.stopped) return;
    const names = await this.listFiles();
    if (names === null) {
      if (initial) this.finishInitial([]);
      return;
    }
    const seen = new Set<string>();
    for (const name of names) {
      let present = true;
      try {
        present = await this.loadFile(name, initial);
      } catch (err) {
        // Whatever goes wrong with one file, the others still load.
        log.error('cannot load manifest file; keeping its previously loaded objects', { file: join(this.dir, name), error: errorMessage(err) });
      }
      if (present) seen.add(name);
    }
    const now = Date.now();
    for (const name of [...this.files.keys()]) {
      if (seen.has(name)) {
        this.missingSince.delete(name);
        continue;
      }
      // Editors save by moving the old file away and writing a new one: a file that has
      // just vanished may be back in a moment, so its objects stay for stableMs.
      const since = this.missingSince.get(name) ?? now;
      if (!initial && now - since < this.stableMs) {
        this.missingSince.set(name, since);
        this.scheduleRescan(this.stableMs - (now - since) + 10);
        continue;
      }
      this.missingSince.delete(name);
      this.files.delete(name);
      log.v(2, 'manifest file removed', { file: join(this.dir, name) });
    }
    if (this.stopped) return;
    const events = this.diff(this.merge());
    if (initial) this.finishInitial(events);
    else this.deliver(events);
  }

  private finishInitial(events: SourceEvent[]): void {
    this.deliver(events);
    for (const kind of KIND_ORDER) this.handler?.onSynced(kind);
    log.info('manifests loaded', { dir: this.dir, objects: this.delivered.size });
  }

  /** Manifest file names in the directory, sorted; null when the directory cannot be read. */
  private async listFiles(): Promise<string[] | null> {
    let entries: string[];
    try {
      entries = await fsp.readdir(this.dir);
    } catch (err) {
      log.error('cannot read manifests directory; keeping the objects loaded so far', {
        dir: this.dir,
        error: errorMessage(err),
      });
      return null;
    }
    const out: string[] = [];
    for (const name of entries) {
      // Dot files include the `..data` links of mounted ConfigMaps and editor temporaries.
      if (name.startsWith('.') || !EXTENSIONS.has(extname(name).toLowerCase())) continue;
      try {
        // stat follows symlinks, as ConfigMap volumes are made of them.
        if ((await fsp.stat(join(this.dir, name))).isFile()) out.push(name);
      } catch {
        // Vanished between readdir and stat: treated as deleted.
      }
    }
    return out.sort();
  }

  /**
   * Reads and parses one file; returns false when it no longer exists. A file changed less
   * than `stableMs` ago may be mid-write (rewritten in place, truncated first): its
   * previous objects stay until it has been still that long.
   */
  private async loadFile(name: string, initial: boolean): Promise<boolean> {
    const path = join(this.dir, name);
    const prev = this.files.get(name);
    let text: string;
    try {
      const st = await fsp.stat(path);
      if (st.size > MAX_MANIFEST_BYTES) {
        if (!prev?.text.startsWith('\0too-large')) {
          log.error('manifest file too large; keeping its previously loaded objects', {
            file: path,
            bytes: st.size,
            limitBytes: MAX_MANIFEST_BYTES,
          });
        }
        this.files.set(name, { text: `\0too-large ${st.size} ${st.mtimeMs}`, objects: prev?.objects ?? new Map(), broken: true });
        return true;
      }
      // Date.now() has whole milliseconds and the file's time finer ones: a file written within
      // the current millisecond looks a fraction of one in the future, and is still being written.
      // Only an mtime that is far ahead (a clock set back) is not waited for.
      const age = Date.now() - st.mtimeMs;
      if (!initial && prev !== undefined && age > -this.stableMs && age < this.stableMs) {
        this.scheduleRescan(this.stableMs - age + 10);
        return true;
      }
      text = await fsp.readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      log.error('cannot read manifest file; keeping its previously loaded objects', {
        file: path,
        error: errorMessage(err),
      });
      // Forget the text so the file is parsed again once it becomes readable.
      this.files.set(name, { text: '\0unreadable', objects: prev?.objects ?? new Map(), broken: true });
      return true;
    }
    if (prev && prev.text === text) return true;
    const res = parseManifests(text, path, extname(name).toLowerCase() === '.json');
    if (!res.ok) {
      log.error('cannot parse manifest file; keeping its previously loaded objects', {
        file: path,
        error: res.error,
      });
      this.files.set(name, { text, objects: prev?.objects ?? new Map(), broken: true });
      return true;
    }
    if (prev?.broken) log.info('manifest file loaded again', { file: path });
    log.v(2, 'manifest file loaded', { file: path, objects: res.objects.size });
    this.files.set(name, { text, objects: res.objects, broken: false });
    return true;
  }

  /** Objects of all files; for an object found in several files the last file by name wins. */
  private merge(): Map<string, Entry> {
    const merged = new Map<string, Entry>();
    const owner = new Map<string, string>();
    const warnings = new Set<string>();
    for (const name of [...this.files.keys()].sort()) {
      for (const [key, entry] of this.files.get(name)!.objects) {
        const before = owner.get(key);
        if (before !== undefined) warnings.add(`${key}\0${before}\0${name}`);
        merged.set(key, entry);
        owner.set(key, name);
      }
    }
    // Warn once per duplicate, not on every rescan.
    for (const w of warnings) {
      if (this.duplicateWarnings.has(w)) continue;
      const [key, first, second] = w.split('\0');
      log.warn('object defined in more than one manifest file; the last file wins', {
        object: key,
        ignored: join(this.dir, first!),
        used: join(this.dir, second!),
      });
    }
    this.duplicateWarnings = warnings;
    return merged;
  }

  private diff(next: Map<string, Entry>): SourceEvent[] {
    const events: Array<{ order: number; key: string; event: SourceEvent }> = [];
    const push = (kind: ObjectKind, key: string, type: EventType, object: KubeObject): void => {
      events.push({ order: KIND_ORDER.indexOf(kind), key, event: { kind, type, object } });
    };
    for (const [key, old] of this.delivered) {
      if (!next.has(key)) {
        this.delivered.delete(key);
        push(old.kind, key, 'DELETED', old.object);
      }
    }
    for (const [key, entry] of next) {
      const json = canonicalJSON(entry.object);
      const old = this.delivered.get(key);
      if (old && old.json === json) continue;
      const object = this.withResourceVersion(entry.object);
      this.delivered.set(key, { kind: entry.kind, json, object });
      push(entry.kind, key, old ? 'MODIFIED' : 'ADDED', object);
    }
    events.sort((a, b) => a.order - b.order || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return events.map((e) => e.event);
  }

  private withResourceVersion(obj: KubeObject): KubeObject {
    this.resourceVersion++;
    if (obj.metadata?.resourceVersion) return obj;
    return { ...obj, metadata: { ...obj.metadata, resourceVersion: String(this.resourceVersion) } };
  }

  private deliver(events: SourceEvent[]): void {
    for (const event of events) {
      if (this.stopped || !this.handler) return;
      try {
        this.handler.onEvent(event);
      } catch (err) {
        log.error('manifests event handler failed', {
          kind: event.kind,
          type: event.type,
          object: objectName(event.object),
          error: errorMessage(err),
        });
      }
    }
  }
}

