// Listing one kind, page by page, into the reflector's store: kept apart from the watch loop,
// which only needs the resourceVersion a list ends at to watch from.
import type { KubeObject } from '../model/k8s.js';
import { log } from '../log.js';
import { ApiError, isObject } from './api-errors.js';
import type { KubeResponse } from './kubeclient.js';
import { ListDecodeError, ListDecoder } from './list-decoder.js';
import { ListSync, type ListTarget } from './list-sync.js';

/** One request to the kind's path, with the reflector's inactivity timer (`touch` re-arms it). */
export type ApiCall = <T>(
  query: Record<string, string | undefined>,
  what: string,
  consume: (res: KubeResponse, touch: () => void) => Promise<T>,
) => Promise<T>;

/** How the reflector lists: which objects, in what pages, over which request. */
export interface ListRequest {
  labelSelector?: string | undefined;
  fieldSelector?: string | undefined;
  pageSize: number;
  call: ApiCall;
  /** A stopped reflector's list ends early, unfinished. */
  stopped(): boolean;
}

/** A finished list: the resourceVersion to watch from, the listed and changed object counts. */
export interface Listed {
  resourceVersion: string;
  objects: number;
  changed: number;
}

// The first list is served from the API server's watch cache (resourceVersion=0), as
// client-go's reflector does: one response whatever the limit, no etcd read. Relists (after a
// 410 or a stall) must not go back in time, so they read the latest state, page by page. A
// cached list the server refuses (other than throttling) falls back to that at once.
/** Lists into `target`, delivering the changes; undefined when stopped before the end. */
export async function listObjects(target: ListTarget, req: ListRequest, fromWatchCache: boolean): Promise<Listed | undefined> {
  if (fromWatchCache) {
    try {
      return await listFrom(target, req, '0');
    } catch (err) {
      const refused = err instanceof ApiError && err.code !== undefined && err.code !== 429 && err.retryAfterMs === undefined;
      if (req.stopped() || !refused) throw err;
      log.info('List from the watch cache failed, listing the latest state instead', { kind: target.kind, reason: err.message });
    }
  }
  return listFrom(target, req, undefined);
}

async function listFrom(target: ListTarget, req: ListRequest, resourceVersion: string | undefined): Promise<Listed | undefined> {
  // A continue token can expire between pages; then the whole list starts again.
  for (let attempt = 1; ; attempt++) {
    const sync = new ListSync(target);
    let cont: string | undefined;
    let rv = '';
    let pages = 0;
    try {
      do {
        const query = {
          limit: String(req.pageSize),
          // A continue token carries its own version.
          resourceVersion: cont === undefined ? resourceVersion : undefined,
          continue: cont,
          labelSelector: req.labelSelector,
          fieldSelector: req.fieldSelector,
        };
        const what = `list ${target.kind}`;
        const meta = await req.call(query, what, async (res, touch) => {
          // Items are decoded and handed on one at a time as the body arrives.
          const dec = new ListDecoder((it) => {
            if (isObject(it)) sync.item(it as KubeObject);
            else log.warn('Skipping list item that is not an object', { kind: target.kind });
          });
          try {
            for await (const chunk of res.body) {
              touch();
              dec.write(chunk as Buffer);
            }
            const { fields, hasItems } = dec.end();
            if (!hasItems || !isObject(fields.metadata)) throw new ApiError(`${what}: response is not a list`);
            return fields.metadata;
          } catch (err) {
            if (err instanceof ListDecodeError) throw new ApiError(`${what}: response is not a JSON list: ${err.message}`);
            throw err;
          }
        });
        pages++;
        const c = meta.continue;
        cont = typeof c === 'string' && c !== '' ? c : undefined;
        if (typeof meta.resourceVersion === 'string') rv = meta.resourceVersion;
      } while (cont !== undefined && !req.stopped());
    } catch (err) {
      if (err instanceof ApiError && err.gone && pages > 0 && attempt < 3 && !req.stopped()) {
        log.info('List continue token expired, restarting the list', { kind: target.kind });
        continue;
      }
      throw err;
    }
    if (req.stopped()) return undefined;
    if (rv === '') throw new ApiError(`list ${target.kind}: response has no resourceVersion`);
    return { resourceVersion: rv, ...sync.finish() };
  }
}
