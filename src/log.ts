// Leveled logging to stderr: `--v N` shows messages of level <= N. Two formats, as upstream's
// --logging-format: klog-style text lines, or one JSON object per line (ts in seconds, msg,
// v for informational messages, then the structured fields).
import { readFileSync } from 'node:fs';

export type LogFormat = 'text' | 'json';

let verbosity = 0;
let format: LogFormat = 'text';
let write: ((line: string) => void) | undefined;
let splitStream = false;
/** --vmodule: a verbosity per source file name (a glob over the name without extension). */
let vmodule: { match: RegExp; level: number }[] = [];

export function setVerbosity(v: number): void {
  verbosity = v;
}

/** Per-file verbosity; the first matching pattern wins over --v for that file's messages. */
export function setVmodule(settings: { pattern: string; level: number }[]): void {
  vmodule = settings.map(({ pattern, level }) => ({
    match: new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replaceAll('*', '.*').replaceAll('?', '.')}$`),
    level,
  }));
}

/** Text format only: informational lines to stdout, warnings and errors to stderr. */
export function setSplitStream(on: boolean): void {
  splitStream = on;
}

export function getVerbosity(): number {
  return verbosity;
}

export function setLogFormat(f: LogFormat): void {
  format = f;
}

/** Redirects log lines (tests); returns the previous writer. */
export function setLogWriter(w: (line: string) => void): (line: string) => void {
  const prev = write ?? ((line: string) => process.stderr.write(line));
  write = w;
  return prev;
}

function defaultWrite(sev: Severity, line: string): void {
  if (splitStream && format === 'text' && sev === 'I') process.stdout.write(line);
  else process.stderr.write(line);
}

/** The calling file's name without directory and extension (only computed when --vmodule is set). */
function callerFile(): string {
  const frame = (new Error().stack ?? '').split('\n')[4] ?? '';
  const m = /([^\s(]*?)([^/\\\s(]+?)\.[cm]?[jt]s:(\d+):\d+\)?$/.exec(frame);
  if (!m) return '';
  return m[2] === BUNDLE_NAME ? (bundledModule(`${m[1]}${m[2]}.js`, Number(m[3])) ?? m[2]) : m[2]!;
}

/** The bundled command's file name (scripts/bundle.mjs): every module's code is in it. */
const BUNDLE_NAME = 'kube-proxy-ts';
const bundleMarks = new Map<string, Array<{ line: number; name: string }>>();

/**
 * Which module a line of the bundle came from, by the bundler's `// dist/src/<path>.js` line that
 * opens each module's code.
 */
function bundledModule(file: string, line: number): string | undefined {
  let marks = bundleMarks.get(file);
  if (!marks) {
    marks = [];
    try {
      const lines = readFileSync(file.startsWith('file://') ? new URL(file) : file, 'utf8').split('\n');
      lines.forEach((text, i) => {
        const mark = /^\/\/ dist\/src\/(?:.*\/)?([^/]+)\.js$/.exec(text);
        if (mark) marks!.push({ line: i + 1, name: mark[1]! });
      });
    } catch {
      // Unreadable: the bundle's own name stands for every module.
    }
    bundleMarks.set(file, marks);
  }
  let found: string | undefined;
  for (const mark of marks) {
    if (mark.line > line) break;
    found = mark.name;
  }
  return found;
}

function enabled(level: number): boolean {
  if (vmodule.length > 0) {
    const file = callerFile();
    const rule = vmodule.find((r) => r.match.test(file));
    if (rule) return rule.level >= level;
  }
  return verbosity >= level;
}

type Severity = 'I' | 'W' | 'E';

function textLine(sev: Severity, msg: string, fields?: Record<string, unknown>): string {
  let line = `${sev}${new Date().toISOString()} ${msg}`;
  if (fields) {
    for (const [k, v] of Object.entries(fields)) line += ` ${k}=${JSON.stringify(v)}`;
  }
  return line + '\n';
}

function jsonLine(sev: Severity, level: number, msg: string, fields?: Record<string, unknown>): string {
  const entry: Record<string, unknown> = { ts: Date.now() / 1000, msg };
  // Upstream's JSON logger marks errors by omitting v; warnings are info lines there.
  if (sev !== 'E') entry.v = level;
  if (sev === 'W') entry.severity = 'warning';
  if (sev === 'E') entry.severity = 'error';
  for (const [k, v] of Object.entries(fields ?? {})) {
    if (!(k in entry)) entry[k] = v;
  }
  return JSON.stringify(entry) + '\n';
}

function emit(sev: Severity, level: number, msg: string, fields?: Record<string, unknown>): void {
  const line = format === 'json' ? jsonLine(sev, level, msg, fields) : textLine(sev, msg, fields);
  if (write) write(line);
  else defaultWrite(sev, line);
}

export const log = {
  info(msg: string, fields?: Record<string, unknown>): void {
    emit('I', 0, msg, fields);
  },
  /**
   * `msg` and `fields` may be functions: they are only called when the level is shown, so text
   * and fields built on a hot path (every watch event) cost nothing when off.
   */
  v(level: number, msg: string | (() => string), fields?: Record<string, unknown> | (() => Record<string, unknown>)): void {
    if (enabled(level)) emit('I', level, typeof msg === 'function' ? msg() : msg, typeof fields === 'function' ? fields() : fields);
  },
  warn(msg: string, fields?: Record<string, unknown>): void {
    emit('W', 0, msg, fields);
  },
  error(msg: string, fields?: Record<string, unknown>): void {
    emit('E', 0, msg, fields);
  },
};
