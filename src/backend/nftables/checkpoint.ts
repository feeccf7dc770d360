// A restart without reading the table back. Reading a 10,000-service table from the kernel costs
// nft seconds of CPU; a proxy that stops cleanly instead leaves what it last wrote in a file and
// a marker chain `checkpoint-<token>` in the table. The next start trusts the file only when the
// marker with the same token is in the kernel (one cheap `nft list chains`), uses the file as the
// kernel's content for its first diff, and removes the marker in that first transaction. The file
// is consumed at once, so a checkpoint is trusted at most once; the first verification after such
// a start reads the table back to catch what was changed while no proxy was watching.
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { gathered, writeFileInPieces } from '../../node/pieces.js';
import type { NftRuleset } from './render.js';

const FORMAT = 1;
export const MARKER_PREFIX = 'checkpoint-';

interface Stored {
  format: number;
  token: string;
  ruleset: {
    family: NftRuleset['family'];
    table: string;
    sets: Array<{ name: string; kind: 'set' | 'map'; decl: string; dynamic?: boolean; elements: Array<[string, string | null]> }>;
    chains: NftRuleset['chains'];
  };
}

export interface Checkpoint {
  token: string;
  ruleset: NftRuleset;
}

export const newToken = (): string => randomBytes(8).toString('hex');

export const markerChain = (token: string): string => `${MARKER_PREFIX}${token}`;

/**
 * Writes the checkpoint atomically (a reader never sees half a file). The JSON is written as it
 * is produced: built whole, it and its copy as bytes cost the stopping proxy 50 MiB at 10,000
 * services, its highest memory of all.
 */
export function writeCheckpoint(path: string, cp: Checkpoint): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileInPieces(tmp, gathered(checkpointJson(cp)));
  renameSync(tmp, path);
}

/** The checkpoint's JSON (a Stored), a piece at a time. */
function* checkpointJson(cp: Checkpoint): Generator<string> {
  const rs = cp.ruleset;
  yield `{"format":${FORMAT},"token":${JSON.stringify(cp.token)},"ruleset":{"family":${JSON.stringify(rs.family)},"table":${JSON.stringify(rs.table)},"sets":[`;
  for (const [i, set] of rs.sets.entries()) {
    const head: Omit<Stored['ruleset']['sets'][number], 'elements'> = { name: set.name, kind: set.kind, decl: set.decl, ...(set.dynamic ? { dynamic: true } : {}) };
    yield `${i > 0 ? ',' : ''}${JSON.stringify(head).slice(0, -1)},"elements":[`;
    let first = true;
    if (!set.dynamic) {
      for (const [k, v] of set.elements) {
        yield `${first ? '' : ','}[${JSON.stringify(k)},${v === undefined ? 'null' : JSON.stringify(v)}]`;
        first = false;
      }
    }
    yield ']}';
  }
  yield '],"chains":[';
  for (const [i, c] of rs.chains.entries()) yield `${i > 0 ? ',' : ''}${JSON.stringify(c)}`;
  yield ']}}';
}

/**
 * Reads and removes the checkpoint; undefined when there is none or it is unreadable (a start
 * then reads the kernel as usual).
 */
export function takeCheckpoint(path: string): Checkpoint | { error: string } | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  rmSync(path, { force: true });
  try {
    const s = JSON.parse(text) as Stored;
    if (s.format !== FORMAT || typeof s.token !== 'string' || !Array.isArray(s.ruleset?.sets) || !Array.isArray(s.ruleset.chains)) {
      return { error: 'unknown checkpoint format' };
    }
    return {
      token: s.token,
      ruleset: {
        family: s.ruleset.family,
        table: s.ruleset.table,
        sets: s.ruleset.sets.map((x) => ({
          name: x.name,
          kind: x.kind,
          decl: x.decl,
          ...(x.dynamic ? { dynamic: true } : {}),
          elements: new Map(x.elements.map(([k, v]): [string, string | undefined] => [k, v ?? undefined])),
        })),
        chains: s.ruleset.chains,
      },
    };
  } catch (e) {
    return { error: `unreadable checkpoint: ${(e as Error).message}` };
  }
}
