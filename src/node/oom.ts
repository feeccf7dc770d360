// oomScoreAdj: the kernel's OOM killer should pick almost anything before the node's proxy.
import { readFileSync, writeFileSync } from 'node:fs';
import { log } from '../log.js';

/** Writes the process's oom_score_adj; a failure is logged, the proxy keeps running. */
export function applyOomScoreAdj(value: number, path = '/proc/self/oom_score_adj'): boolean {
  try {
    const current = Number(readFileSync(path, 'utf8').trim());
    if (current !== value) writeFileSync(path, `${value}\n`);
    log.info('set oom_score_adj', { value });
    return true;
  } catch (e) {
    log.warn('setting oom_score_adj failed', { value, error: (e as Error).message });
    return false;
  }
}
