// nftables mode, KEP-6032 style: connections to 127.0.0.1:NodePort (::1 for IPv6) reach the
// Service through the in-process proxy, since nftables rules cannot DNAT loopback traffic without
// route_localnet (which upstream will not set in this mode). The kernel rules are untouched.
import { log } from '../../log.js';
import type { Snapshot } from '../../model/types.js';
import { decorate } from '../common/decorate.js';
import type { Backend, SyncResult } from '../types.js';
import { carried, type ListenerPool } from './backend.js';
import { planLocalhostNodePorts } from './plan.js';

/** `backend` plus localhost NodePort listeners, updated after each successful sync. */
export function withLocalhostNodePorts(backend: Backend, createPool: () => ListenerPool): Backend {
  let pool: ListenerPool | undefined;
  return decorate(backend, {
    async sync(snapshot: Snapshot): Promise<SyncResult> {
      const result = await backend.sync(snapshot);
      pool ??= createPool();
      const wanted = planLocalhostNodePorts(snapshot);
      const ports = await pool.update(wanted);
      const missing = wanted.filter((l) => ports.get(l.key) !== l.fixedPort).map((l) => `${l.key} (${l.fixedPort})`);
      if (missing.length > 0) log.warn('some localhost NodePorts could not listen', { family: backend.family, ports: missing });
      return result;
    },
    async stop(removeRules: boolean): Promise<void> {
      await backend.stop?.(removeRules);
      await pool?.close();
      pool = undefined;
    },
    carriedTraffic: () => carried(pool, 'localhost-nodeports'),
    async cleanup(): Promise<void> {
      await pool?.close();
      pool = undefined;
      await backend.cleanup();
    },
  });
}
