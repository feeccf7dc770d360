// The backend of a mode that has no kernel backend yet: it programs nothing, logs each sync
// and prints the snapshot it would program, so the mode can still be run and observed.
import { log } from '../log.js';
import { describeSnapshot } from '../model/describe.js';
import type { IPFamily, Snapshot } from '../model/types.js';
import type { Backend, BackendConfig, SyncResult } from './types.js';

export interface LogOnlyOptions {
  /** Where the snapshot descriptions go, each with its newline (default: stdout). */
  out?: (text: string) => void;
}

export class LogOnlyBackend implements Backend {
  readonly family: IPFamily;
  private last = '';

  constructor(
    readonly mode: string,
    config: BackendConfig,
    private readonly opts: LogOnlyOptions = {},
  ) {
    this.family = config.family;
    log.warn(`proxy mode ${mode} has no kernel backend yet: nothing is programmed, each snapshot is printed instead`, {
      family: this.family,
    });
  }

  sync(snapshot: Snapshot): Promise<SyncResult> {
    this.last = describeSnapshot(snapshot);
    log.info('nothing programmed (no kernel backend for this mode); printing the snapshot', {
      mode: this.mode,
      family: this.family,
      generation: snapshot.generation,
      servicePorts: snapshot.services.size,
    });
    (this.opts.out ?? ((t: string) => process.stdout.write(t)))(this.last + '\n');
    return Promise.resolve({ operations: 0, full: snapshot.changes.full });
  }

  /** Nothing was programmed, so there is nothing to remove. */
  cleanup(): Promise<void> {
    return Promise.resolve();
  }

  describe(): string {
    return this.last;
  }
}
