// A watch response body as the events it carries, one JSON object a line, decoded as the bytes
// arrive: like list-decoder.ts for lists, it keeps bytes and lines out of the reflector.
import { StringDecoder } from 'node:string_decoder';
import type { KubeObject, ObjectKind } from '../model/k8s.js';
import { LineSplitter } from '../lines.js';
import { ApiError, isObject } from './api-errors.js';

/** One event of a watch; its type is not checked beyond ERROR, which throws instead. */
export interface WatchEvent {
  type: string;
  object: KubeObject & Record<string, unknown>;
}

export class WatchDecoder {
  private readonly text = new StringDecoder('utf8');
  private readonly lines: LineSplitter;

  /** Hands each complete line's event to `onEvent`; once `stopped()`, lines are no longer read. */
  constructor(
    private readonly kind: ObjectKind,
    private readonly stopped: () => boolean,
    onEvent: (ev: WatchEvent) => void,
  ) {
    this.lines = new LineSplitter((raw) => {
      const line = raw.trim();
      if (line === '' || stopped()) return;
      onEvent(this.parse(line));
    });
  }

  write(chunk: Buffer): void {
    this.lines.push(this.text.write(chunk));
  }

  /** The event on a last line the server did not end, if any. */
  end(): WatchEvent | undefined {
    const rest = (this.lines.takeRest() + this.text.end()).trim();
    return rest !== '' && !this.stopped() ? this.parse(rest) : undefined;
  }

  private parse(line: string): WatchEvent {
    let ev: unknown;
    try {
      ev = JSON.parse(line);
    } catch {
      throw new ApiError(`watch ${this.kind}: malformed event line ${JSON.stringify(line.slice(0, 80))}`);
    }
    if (!isObject(ev) || typeof ev.type !== 'string' || !isObject(ev.object)) {
      throw new ApiError(`watch ${this.kind}: malformed event ${JSON.stringify(line.slice(0, 80))}`);
    }
    const obj = ev.object as KubeObject & Record<string, unknown>;
    if (ev.type === 'ERROR') {
      const code = typeof obj.code === 'number' ? obj.code : undefined;
      const msg = typeof obj.message === 'string' ? obj.message : 'unknown error';
      throw new ApiError(`watch ${this.kind}: error event ${code ?? ''} ${msg}`.trim(), code, code === 410);
    }
    return { type: ev.type, object: obj };
  }
}
