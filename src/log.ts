// klog-style leveled logging to stderr: `--v N` shows messages of level <= N.
let verbosity = 0;

export function setVerbosity(v: number): void {
  verbosity = v;
}

export function getVerbosity(): number {
  return verbosity;
}

function emit(sev: 'I' | 'W' | 'E', msg: string, fields?: Record<string, unknown>): void {
  const ts = new Date().toISOString();
  let line = `${sev}${ts} ${msg}`;
  if (fields) {
    for (const [k, v] of Object.entries(fields)) line += ` ${k}=${JSON.stringify(v)}`;
  }
  process.stderr.write(line + '\n');
}

export const log = {
  info(msg: string, fields?: Record<string, unknown>): void {
    emit('I', msg, fields);
  },
  v(level: number, msg: string, fields?: Record<string, unknown>): void {
    if (verbosity >= level) emit('I', msg, fields);
  },
  warn(msg: string, fields?: Record<string, unknown>): void {
    emit('W', msg, fields);
  },
  error(msg: string, fields?: Record<string, unknown>): void {
    emit('E', msg, fields);
  },
};
