/*
 * The proxy's log as the e2e harness reads it, to know when a change is in the kernel: with
 * `--v 2` the proxy logs, after each applied sync, what it just programmed: every service port
 * (with its endpoints) after a full sync, the changed and deleted ones after a partial sync. These
 * blocks fold into the whole programmed state, per family, and a test waits for a state, newer
 * than the change, that shows the desired one. A plain "next sync line" is not enough: a sync
 * already running when the change arrives logs without it.
 */

export type Family = 'IPv4' | 'IPv6';

/** One service port as a logged snapshot shows it. */
export interface LoggedServicePort {
  /** The whole description line, e.g. `default/web:http TCP 10.96.0.10:80 nodePort=30080`. */
  line: string;
  /** Endpoints as `ip:port` / `[ip6]:port`, flags removed, sorted. */
  clusterEndpoints: string[];
  localEndpoints: string[];
}

/** A snapshot the proxy logged after applying it to the kernel. */
export interface LoggedSnapshot {
  /** Order of appearance in the proxy's log, from 0. */
  seq: number;
  family: Family;
  /** Everything programmed after this sync, keyed by service port name (`ns/name:port`). */
  services: Map<string, LoggedServicePort>;
}

function stripEndpoint(token: string): string {
  return token.replace(/\(.*\)$/, '');
}

function endpointList(text: string): string[] {
  const t = text.trim();
  return t === '(none)' ? [] : t.split(/\s+/).map(stripEndpoint).sort();
}

/** Endpoint text as the proxy logs it. */
export function endpointText(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

export class ProxySyncLog {
  readonly snapshots: LoggedSnapshot[] = [];
  /** The programmed state of each family, as the logged blocks so far add up to. */
  private readonly programmed = new Map<Family, Map<string, LoggedServicePort>>();
  private log = '';
  private lastOutputAt = 0;
  private parsedUpTo = 0;

  /** Takes in output the proxy wrote to stderr. */
  append(chunk: string): void {
    this.log += chunk;
    this.lastOutputAt = Date.now();
  }

  /** The log so far. */
  get text(): string {
    return this.log;
  }

  /** Parses every complete snapshot block logged since the last call. */
  parse(): void {
    const end = this.log.lastIndexOf('\n') + 1;
    if (end <= this.parsedUpTo) return;
    const lines = this.log.slice(this.parsedUpTo, end).split('\n');
    lines.pop(); // the text ends with a newline
    // A block ends at the next unindented line. The last block of the log may still be arriving
    // in pieces: it is parsed once the output has been quiet for a moment.
    const quiet = Date.now() - this.lastOutputAt > 50;
    let i = 0;
    let consumed = this.parsedUpTo;
    while (i < lines.length) {
      const head = /^I\S+ snapshot (IPv4|IPv6) generation \d+: .*?( \(full\))?$/.exec(lines[i]!);
      if (!head) {
        consumed += lines[i]!.length + 1;
        i++;
        continue;
      }
      let j = i + 1;
      while (j < lines.length && lines[j]!.startsWith(' ')) j++;
      if (j === lines.length && !quiet) break;
      const family = head[1] as Family;
      // A full block lists everything; a partial one changes the previous state.
      const services = new Map<string, LoggedServicePort>(head[2] ? [] : this.programmed.get(family));
      let current: LoggedServicePort | undefined;
      for (const l of lines.slice(i + 1, j)) {
        const ce = /^ {4}cluster endpoints: (.*)$/.exec(l);
        const le = /^ {4}local endpoints: +(.*)$/.exec(l);
        const del = /^ {2}deleted (\S+) (\S+)$/.exec(l);
        if (ce && current) current.clusterEndpoints = endpointList(ce[1]!);
        else if (le && current) current.localEndpoints = endpointList(le[1]!);
        else if (del) {
          // Keyed by name only: a port of the same name in another protocol stays.
          if (services.get(del[1]!)?.line.split(' ')[1] === del[2]) services.delete(del[1]!);
          current = undefined;
        } else if (/^ {2}\S/.test(l)) {
          const line = l.trim();
          current = { line, clusterEndpoints: [], localEndpoints: [] };
          services.set(line.split(' ')[0]!, current);
        }
      }
      this.programmed.set(family, services);
      this.snapshots.push({ seq: this.snapshots.length, family, services });
      for (let k = i; k < j; k++) consumed += lines[k]!.length + 1;
      i = j;
    }
    this.parsedUpTo = consumed;
  }

  /** Number of snapshots logged so far: pass it as `since` to ignore older ones. */
  mark(): number {
    this.parse();
    return this.snapshots.length;
  }
}
