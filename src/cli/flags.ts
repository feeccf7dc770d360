// Command line of kube-proxy-ts: upstream kube-proxy's flags (pflag syntax) plus our own.
// The effective configuration is: config file (if --config) → upstream defaults → flags
// that were given explicitly → validation.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ConfigError,
  ConfigErrors,
  applyDefaults,
  normalizeDuration,
  readConfigFile,
  showValue,
  validateConfiguration,
  withSource,
  type PartialConfiguration,
} from '../config/index.js';
import type { KubeProxyConfiguration } from '../config/types.js';
import { FLAGS, type FlagSpec, type Kind, type Value } from './flag-table.js';
import { didYouMean } from './suggest.js';

export interface CommandLine {
  /** File (if --config) + defaults + flag overrides, validated. */
  config: KubeProxyConfiguration;
  /** --config ('' if unset). */
  configFile: string;
  /** --master ('' if unset). */
  master: string;
  /** --manifests DIR ('' if unset): standalone source. */
  manifestsDir: string;
  cleanup: boolean;
  dryRun: boolean;
  /** --watch: a dry run keeps running and prints each sync's changes. */
  watch: boolean;
  /** --init-only: the privileged node set-up (sysctls, oom_score_adj), then exit. */
  initOnly: boolean;
  /** --vmodule: per-file verbosity, `pattern=N,...` ('' if unset). */
  vmodule: string;
  /** Names of the flags given explicitly (without dashes). */
  given: ReadonlySet<string>;
  writeConfigTo: string;
  version: boolean;
  help: boolean;
  /** --v, or logging.verbosity of the config file. */
  verbosity: number;
}

const BY_NAME = new Map(FLAGS.map((f) => [f.name, f]));

/** The commands besides running the proxy; each has its own --help. */
export const SUBCOMMANDS: Record<string, string> = {
  explain: 'Trace a packet through the rules the proxy would program: which rule matches, which endpoint answers.',
  sandbox: 'Run the proxy on an example cluster in network namespaces on this machine, and check it forwards.',
};
const SHORTHANDS: Record<string, string> = { h: 'help', v: 'v' };

function badValue(flag: string, raw: string, reason: string): ConfigError {
  return new ConfigError(`invalid value ${showValue(raw)} for flag --${flag}: ${reason}`, `--${flag}`, raw, reason);
}

// Go strconv.ParseBool.
function parseBool(flag: string, raw: string): boolean {
  if (['1', 't', 'T', 'true', 'TRUE', 'True'].includes(raw)) return true;
  if (['0', 'f', 'F', 'false', 'FALSE', 'False'].includes(raw)) return false;
  throw badValue(flag, raw, 'must be true or false');
}

function convert(spec: FlagSpec, raw: string, previous: Value | undefined): Value {
  switch (spec.kind) {
    case 'string':
      return raw;
    case 'bool':
      return parseBool(spec.name, raw);
    case 'int': {
      const n = Number(raw);
      if (!/^[+-]?\d+$/.test(raw) || n < -2147483648 || n > 2147483647) {
        throw badValue(spec.name, raw, 'must be a 32-bit integer');
      }
      return n;
    }
    case 'float': {
      const n = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(n)) throw badValue(spec.name, raw, 'must be a number');
      return n;
    }
    case 'duration':
      try {
        return normalizeDuration(raw);
      } catch {
        throw badValue(spec.name, raw, 'must be a duration such as 30s, 1m0s or 500ms');
      }
    case 'list': {
      // Repeating a list flag appends, as pflag's string slices do.
      const items = raw === '' ? [] : raw.split(',').map((s) => s.trim());
      return [...((previous as string[] | undefined) ?? []), ...items];
    }
    case 'mapBool': {
      const out: Record<string, boolean> = { ...((previous as Record<string, boolean> | undefined) ?? {}) };
      for (const pair of raw.split(',')) {
        const item = pair.trim();
        if (item === '') continue;
        const eq = item.indexOf('=');
        if (eq <= 0) throw badValue(spec.name, raw, `${showValue(item)} is not of the form Name=true|false`);
        const key = item.slice(0, eq).trim();
        const val = item.slice(eq + 1).trim();
        if (!['true', 'false', '1', '0', 't', 'f', 'T', 'F', 'TRUE', 'FALSE', 'True', 'False'].includes(val)) {
          throw badValue(spec.name, raw, `value of ${key} must be true or false, got ${showValue(val)}`);
        }
        out[key] = parseBool(spec.name, val);
      }
      return out;
    }
  }
}

/** Splits argv (without node and script) into explicitly given flag values. */
function scan(argv: string[]): Map<string, Value> {
  const given = new Map<string, Value>();
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    let name: string;
    let inline: string | undefined;
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      inline = eq < 0 ? undefined : arg.slice(eq + 1);
      if (!BY_NAME.has(name)) throw new ConfigError(`unknown flag: --${name}${didYouMean(name, [...BY_NAME.keys()], '--')}`, `--${name}`);
    } else if (arg.startsWith('-') && arg.length > 1) {
      // pflag shorthands: -h, -v 2, -v=2, -v2.
      const short = arg[1]!;
      const long = SHORTHANDS[short];
      if (long === undefined) throw new ConfigError(`unknown shorthand flag: ${showValue(short)} in ${arg}`, arg);
      name = long;
      const rest = arg.slice(2);
      inline = rest === '' ? undefined : rest.startsWith('=') ? rest.slice(1) : rest;
    } else {
      positional.push(arg);
      continue;
    }
    const spec = BY_NAME.get(name)!;
    let raw: string;
    if (inline !== undefined) {
      raw = inline;
    } else if (spec.kind === 'bool') {
      raw = 'true';
    } else {
      const next = argv[i + 1];
      // A following long flag is never a value; a negative number is (--oom-score-adj -999).
      if (next === undefined || next.startsWith('--')) {
        throw new ConfigError(`flag needs an argument: --${name}`, `--${name}`);
      }
      raw = next;
      i++;
    }
    given.set(name, convert(spec, raw, given.get(name)));
  }
  if (positional.length > 0) {
    const arg = positional[0]!;
    const hint = didYouMean(arg, Object.keys(SUBCOMMANDS), 'kube-proxy-ts ');
    throw new ConfigError(
      hint !== ''
        ? `unknown command ${showValue(arg)}${hint}`
        : `unexpected argument ${showValue(arg)}: kube-proxy-ts takes no positional arguments; its commands are ${Object.keys(SUBCOMMANDS).join(', ')}`,
      undefined,
      arg,
    );
  }
  return given;
}

/** --vmodule's `pattern=N,...`: each pattern a file name glob, each N a non-negative level. */
export function parseVmodule(text: string): { pattern: string; level: number }[] {
  return text
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '')
    .map((item) => {
      const m = /^([^=]+)=(\d+)$/.exec(item);
      if (!m) throw badValue('vmodule', text, `${showValue(item)} is not of the form pattern=N`);
      return { pattern: m[1]!.trim(), level: Number(m[2]) };
    });
}

/** Points a validation error at the flag that set the field, or at the config file. */
function attribute(e: unknown, given: Map<string, Value>, configFile: string): unknown {
  if (e instanceof ConfigErrors) {
    const problems = e.problems.map((p) => attribute(p, given, '') as ConfigError);
    const fromFile = configFile !== '' && problems.some((p) => p.field === undefined || !p.field.startsWith('--'));
    return new ConfigErrors(problems, fromFile ? `config file ${showValue(configFile)}: ` : '');
  }
  if (!(e instanceof ConfigError) || e.field === undefined) return e;
  const field = e.field.replace(/\[\d+\]$/, '');
  for (const spec of FLAGS) {
    if (given.has(spec.name) && spec.fields?.some((f) => field === f || field.startsWith(`${f}.`))) {
      const where = field === e.field ? '' : ` (${e.field})`;
      return new ConfigError(
        `invalid value ${showValue(e.value)} for flag --${spec.name}${where}: ${e.reason ?? e.message}`,
        `--${spec.name}`,
        e.value,
        e.reason,
      );
    }
  }
  const related = FLAGS.find((spec) => given.has(spec.name) && spec.related?.includes(field));
  const hinted = related
    ? new ConfigError(`${e.message} (see flag --${related.name}=${showValue(given.get(related.name))})`, e.field, e.value, e.reason)
    : e;
  return configFile === '' ? hinted : withSource(hinted, configFile);
}

function firstPath(list: string | undefined): string {
  return (list ?? '').split(':').find((p) => p !== '') ?? '';
}

/**
 * Parses the command line (`argv` without node and the script). With --help or --version
 * the config file is not read and `config` holds the defaults.
 */
export function parseCommandLine(argv: string[], env: NodeJS.ProcessEnv = process.env): CommandLine {
  const given = scan(argv);
  const get = <T extends Value>(name: string, def: T): T => (given.has(name) ? (given.get(name) as T) : def);
  const help = get('help', false);
  const version = get('version', false);
  const configFile = get('config', '');

  let config: KubeProxyConfiguration;
  if (help || version) {
    config = applyDefaults({});
  } else {
    const partial: PartialConfiguration = configFile === '' ? {} : readConfigFile(configFile);
    // bindAddress goes in before defaulting: the default healthz/metrics hosts follow its family.
    if (given.has('bind-address')) partial.bindAddress = get('bind-address', '');
    try {
      config = applyDefaults(partial);
    } catch (e) {
      throw configFile === '' ? e : withSource(e, configFile);
    }
    for (const spec of FLAGS) {
      if (spec.apply && given.has(spec.name)) spec.apply(config, given.get(spec.name)!);
    }
    const master = get('master', '');
    if (config.clientConnection.kubeconfig === '' && master === '') {
      config.clientConnection.kubeconfig = firstPath(env.KUBECONFIG);
    }
    try {
      validateConfiguration(config);
    } catch (e) {
      throw attribute(e, given, configFile);
    }
  }

  if (get('watch', false) && !get('dry-run', false)) {
    throw new ConfigError('--watch only works with --dry-run (a running proxy already follows every change)', '--watch');
  }
  if (given.has('vmodule')) parseVmodule(get('vmodule', ''));
  return {
    config,
    configFile,
    master: get('master', ''),
    manifestsDir: get('manifests', ''),
    cleanup: get('cleanup', false),
    dryRun: get('dry-run', false),
    watch: get('watch', false),
    initOnly: get('init-only', false),
    vmodule: get('vmodule', ''),
    given: new Set(given.keys()),
    writeConfigTo: get('write-config-to', ''),
    version,
    help,
    verbosity: config.logging.verbosity,
  };
}

/** Usage text listing every flag with its default and a one-line description. */
export function helpText(): string {
  const lines = [
    'kube-proxy-ts: Kubernetes node proxy (nftables, iptables, IPVS), compatible with kube-proxy.',
    '',
    'Usage: kube-proxy-ts [flags]              run the proxy',
    '       kube-proxy-ts COMMAND [flags]      run a command; kube-proxy-ts COMMAND -h lists its flags',
    '',
    'Commands:',
    ...Object.entries(SUBCOMMANDS).map(([name, what]) => `  ${name.padEnd(10)}${what}`),
    '',
    'Flags (both --flag value and --flag=value; booleans also --flag=false):',
  ];
  const typeName: Record<Kind, string> = {
    string: 'string', bool: '', int: 'int', float: 'float', duration: 'duration', list: 'strings', mapBool: 'key=bool,...',
  };
  const heads = FLAGS.map((f) => {
    const short = Object.entries(SHORTHANDS).find(([, long]) => long === f.name)?.[0];
    return `  ${short ? `-${short}, ` : '    '}--${f.name}${typeName[f.kind] ? ` ${typeName[f.kind]}` : ''}`;
  });
  const width = Math.max(...heads.map((h) => h.length)) + 2;
  FLAGS.forEach((f, i) => {
    const def = f.def !== '' && f.def !== 'false' ? ` (default ${f.def})` : '';
    lines.push(`${heads[i]!.padEnd(width)}${f.usage}${def}`);
  });
  return lines.join('\n') + '\n';
}

// Version of the installed package: the nearest package.json above this module.
function readVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version?: unknown };
      if (typeof pkg.version === 'string') return pkg.version;
    } catch {
      // No (readable) package.json here: keep walking up.
    }
    const parent = dirname(dir);
    if (parent === dir) return '0.0.0-unknown';
    dir = parent;
  }
}

export const VERSION: string = readVersion();
