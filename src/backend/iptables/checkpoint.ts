// A restart without reading our rules back. iptables-save of a large ruleset takes seconds (the
// restart's start-up save of 5,000 services × 50 endpoints took 11 s on iptables-nft), and all it
// shows after a clean stop is what that proxy wrote. So a proxy that stops cleanly writes its
// chains to a file (digests for the service ports' chains, the others whole) and then a marker
// chain KUBE-CKPT-<token> into the filter table. The next start, in the same flavour, trusts the
// file only when that chain is there (one `iptables -S`): any other mode of ours, or a cleanup,
// removes it with the rest of our chains. The file then stands in for the start-up's save, the
// first sync deletes the marker as a chain of ours the ruleset lacks, and the first verification
// reads the rules back to repair what changed while no proxy was watching. The file is removed
// when taken, so a checkpoint is trusted at most once. It also records, per service port, what
// its chains were rendered from (renderInputsDigest): a restart that would render them from the
// same, under the same context, takes them as held without rendering them.
import { log } from '../../log.js';
import type { IPFamily } from '../../model/types.js';
import type { ExecOptions } from '../../node/exec.js';
import { takeCheckpointFile, writeCheckpointFile } from '../common/checkpoint-file.js';
import { chainExists } from './apply.js';
import { FAMILIES, type Flavour } from './flavour.js';
import { checkpointMarker } from './names.js';
import type { IptChain } from './render.js';
import { keptWhole, rulesDigest, type KernelChains } from './save.js';

const FORMAT = 2;

/** The marker chain of the checkpoint with `token`, in filter: a chain of ours the ruleset never has. */
export function markerChain(token: string): IptChain {
  return { table: 'filter', name: checkpointMarker(token), rules: [] };
}

interface Head {
  format: number;
  token: string;
  family: IPFamily;
  flavour: Flavour;
  /** contextDigest of the render context the service ports' chains were rendered in. */
  context: number;
}

export interface IptablesCheckpoint extends Head {
  /** Our chains as the stopping proxy wrote them, as a read-back would give them. */
  kernel: KernelChains;
}

/**
 * Writes the checkpoint (see checkpoint-file.ts). One line per chain: `table/chain`, a tab and the
 * digest of its rules; a chain kept whole (see keptWhole) is a JSON object with its rules. Then
 * one line per service port the chains were rendered from: `@`, its key, a tab and the digest.
 */
export function writeIptablesCheckpoint(
  path: string,
  head: Omit<Head, 'format'>,
  chains: readonly IptChain[],
  renderedFrom: Iterable<[string, number]>,
): void {
  writeCheckpointFile(path, checkpointLines({ format: FORMAT, ...head }, chains, renderedFrom));
}

function* checkpointLines(head: Head, chains: readonly IptChain[], renderedFrom: Iterable<[string, number]>): Generator<string> {
  yield `${JSON.stringify(head)}\n`;
  for (const c of chains) {
    const id = `${c.table}/${c.name}`;
    yield keptWhole(id) ? `${JSON.stringify({ id, rules: c.rules })}\n` : `${id}\t${rulesDigest(c.rules)}\n`;
  }
  for (const [key, digest] of renderedFrom) yield `@${key}\t${digest}\n`;
}

/** Reads and removes the checkpoint (see takeCheckpointFile). */
export function takeIptablesCheckpoint(path: string): IptablesCheckpoint | { error: string } | undefined {
  return takeCheckpointFile(path, (lines): IptablesCheckpoint | { error: string } => {
    const first = lines.next();
    const head = first.done ? undefined : (JSON.parse(first.value) as Partial<Head>);
    if (
      head?.format !== FORMAT ||
      typeof head.token !== 'string' ||
      typeof head.family !== 'string' ||
      typeof head.flavour !== 'string' ||
      typeof head.context !== 'number'
    ) {
      return { error: 'unknown checkpoint format' };
    }
    const inputs = new Map<string, number>();
    const kernel: KernelChains = { whole: new Map(), digests: new Map(), builtin: new Set(), rendered: { context: head.context, inputs } };
    for (const line of lines) {
      if (line.startsWith('{')) {
        const { id, rules } = JSON.parse(line) as { id: unknown; rules: unknown };
        if (typeof id !== 'string' || !Array.isArray(rules) || !rules.every((r) => typeof r === 'string')) return { error: 'unreadable checkpoint: a malformed chain' };
        kernel.whole.set(id, rules as string[]);
        continue;
      }
      const tab = line.indexOf('\t');
      const text = line.slice(tab + 1);
      const digest = /^\d+$/.test(text) ? Number(text) : NaN;
      if (tab <= 0 || !Number.isSafeInteger(digest)) return { error: 'unreadable checkpoint: a malformed digest line' };
      if (line.startsWith('@')) inputs.set(line.slice(1, tab), digest);
      else kernel.digests.set(line.slice(0, tab), digest);
    }
    return { format: head.format, token: head.token, family: head.family, flavour: head.flavour, context: head.context, kernel };
  });
}

/**
 * Our chains as the checkpoint at `path` says the kernel holds them (the file is removed), with
 * its marker among them so that the first sync deletes it; undefined, logged, when there is none
 * or it cannot be trusted: written by another family or flavour, or its marker is gone.
 */
export async function checkpointedKernel(path: string, family: IPFamily, flavour: Flavour, exec: ExecOptions): Promise<KernelChains | undefined> {
  const cp = takeIptablesCheckpoint(path);
  if (!cp) return undefined;
  if ('error' in cp) {
    log.warn('ignoring the restart checkpoint; reading the rules back instead', { family, file: path, error: cp.error });
    return undefined;
  }
  const marker = markerChain(cp.token);
  if (cp.family !== family || cp.flavour !== flavour || !(await chainExists(family, flavour, marker.table, marker.name, exec))) {
    log.info('the restart checkpoint does not match the kernel; reading the rules back', { family, flavour, checkpointFlavour: cp.flavour });
    return undefined;
  }
  log.info('restarting from the checkpoint of the previous clean stop; the rules are read back at the first verification', { family });
  cp.kernel.whole.set(`${marker.table}/${marker.name}`, []);
  return cp.kernel;
}

/** checkpointedKernel for each family that has a checkpoint file (`fileOf`), by family. */
export async function checkpointedKernels(
  flavour: Flavour,
  fileOf: (family: IPFamily) => string | undefined,
  exec: ExecOptions,
): Promise<Map<IPFamily, KernelChains>> {
  const found = new Map<IPFamily, KernelChains>();
  for (const family of FAMILIES) {
    const file = fileOf(family);
    const kernel = file ? await checkpointedKernel(file, family, flavour, exec) : undefined;
    if (kernel) found.set(family, kernel);
  }
  return found;
}
