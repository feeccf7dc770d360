// Strict reader for KubeProxyConfiguration files (YAML or JSON). Every field is checked
// against the v1alpha1 shape so a typo is reported instead of silently ignored.
import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';
import { API_VERSION, KIND, applyDefaults, type PartialConfiguration } from './defaults.js';
import { formatDurationNs, isDuration } from './duration.js';
import { ConfigError, ConfigErrors, invalidField, showValue, throwAll } from './errors.js';
import type { KubeProxyConfiguration } from './types.js';
import { validateConfiguration } from './validate.js';

type Spec =
  | 'string'
  | 'bool'
  | 'int'
  | 'number'
  | 'duration'
  /** Duration string, or a number of nanoseconds (component-base logging accepts both). */
  | 'durationOrNs'
  | 'stringList'
  | 'boolMap'
  /** Free-form object, not checked (Windows-only or logging-format options). */
  | 'anyMap'
  | { [field: string]: Spec };

const SCHEMA: { [field: string]: Spec } = {
  apiVersion: 'string',
  kind: 'string',
  featureGates: 'boolMap',
  clientConnection: {
    kubeconfig: 'string',
    acceptContentTypes: 'string',
    contentType: 'string',
    qps: 'number',
    burst: 'int',
  },
  logging: {
    format: 'string',
    flushFrequency: 'durationOrNs',
    verbosity: 'int',
    options: 'anyMap',
  },
  hostnameOverride: 'string',
  bindAddress: 'string',
  healthzBindAddress: 'string',
  metricsBindAddress: 'string',
  bindAddressHardFail: 'bool',
  enableProfiling: 'bool',
  showHiddenMetricsForVersion: 'string',
  mode: 'string',
  iptables: {
    masqueradeBit: 'int',
    masqueradeAll: 'bool',
    localhostNodePorts: 'bool',
    syncPeriod: 'duration',
    minSyncPeriod: 'duration',
  },
  ipvs: {
    syncPeriod: 'duration',
    minSyncPeriod: 'duration',
    scheduler: 'string',
    excludeCIDRs: 'stringList',
    strictARP: 'bool',
    tcpTimeout: 'duration',
    tcpFinTimeout: 'duration',
    udpTimeout: 'duration',
  },
  nftables: {
    masqueradeBit: 'int',
    masqueradeAll: 'bool',
    syncPeriod: 'duration',
    minSyncPeriod: 'duration',
  },
  winkernel: 'anyMap',
  detectLocalMode: 'string',
  detectLocal: {
    bridgeInterface: 'string',
    interfaceNamePrefix: 'string',
  },
  clusterCIDR: 'string',
  nodePortAddresses: 'stringList',
  oomScoreAdj: 'int',
  conntrack: {
    maxPerCore: 'int',
    min: 'int',
    tcpEstablishedTimeout: 'duration',
    tcpCloseWaitTimeout: 'duration',
    tcpBeLiberal: 'bool',
    udpTimeout: 'duration',
    udpStreamTimeout: 'duration',
  },
  configSyncPeriod: 'duration',
  portRange: 'string',
  udpIdleTimeout: 'duration',
  windowsRunAsService: 'bool',
};

const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function join(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}

// Returns the checked value (durations given as nanoseconds become Go duration text); a bad
// value is added to `problems` and left out, so that every mistake of a file is reported.
function check(spec: Spec, value: unknown, path: string, problems: ConfigError[]): unknown {
  try {
    return checkValue(spec, value, path, problems);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    problems.push(e);
    return undefined;
  }
}

function checkValue(spec: Spec, value: unknown, path: string, problems: ConfigError[]): unknown {
  // JSON null leaves a field unset, as in Go's decoder.
  if (value === null) return null;
  switch (spec) {
    case 'string':
      if (typeof value !== 'string') throw invalidField(path, value, 'must be a string');
      return value;
    case 'bool':
      if (typeof value !== 'boolean') throw invalidField(path, value, 'must be true or false');
      return value;
    case 'int':
      if (typeof value !== 'number' || !Number.isInteger(value) || value < INT32_MIN || value > INT32_MAX) {
        throw invalidField(path, value, 'must be a 32-bit integer');
      }
      return value;
    case 'number':
      if (typeof value !== 'number' || !Number.isFinite(value)) throw invalidField(path, value, 'must be a number');
      return value;
    case 'duration':
      if (!isDuration(value)) throw invalidField(path, value, 'must be a duration such as "30s", "1m0s" or "500ms"');
      return value;
    case 'durationOrNs':
      if (typeof value === 'number' && Number.isInteger(value)) return formatDurationNs(BigInt(value));
      if (!isDuration(value)) {
        throw invalidField(path, value, 'must be a duration such as "5s" or a number of nanoseconds');
      }
      return value;
    case 'stringList':
      if (!Array.isArray(value)) throw invalidField(path, value, 'must be a list of strings');
      value.forEach((item, i) => {
        if (typeof item !== 'string') problems.push(invalidField(`${path}[${i}]`, item, 'must be a string'));
      });
      return value.filter((item) => typeof item === 'string');
    case 'boolMap': {
      if (!isPlainObject(value)) throw invalidField(path, value, 'must be a map of names to true/false');
      const out: Record<string, boolean> = {};
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== 'boolean') problems.push(invalidField(join(path, k), v, 'must be true or false'));
        else out[k] = v;
      }
      return out;
    }
    case 'anyMap':
      if (!isPlainObject(value)) throw invalidField(path, value, 'must be a map');
      return value;
    default: {
      if (!isPlainObject(value)) throw invalidField(path, value, 'must be a map');
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(value)) {
        const sub = Object.hasOwn(spec, k) ? spec[k] : undefined;
        if (sub === undefined) {
          problems.push(new ConfigError(`unknown field ${showValue(join(path, k))}`, join(path, k), v));
          continue;
        }
        const checked = check(sub, v, join(path, k), problems);
        if (checked !== undefined) out[k] = checked;
      }
      return out;
    }
  }
}

/**
 * Checks a decoded object against the v1alpha1 shape: apiVersion and kind, no unknown
 * fields at any level, right value types; every problem is reported. Returns it as a partial configuration (not
 * defaulted). Errors do not name a file; see parseConfigText for that.
 */
export function checkConfigObject(obj: unknown): PartialConfiguration {
  if (!isPlainObject(obj)) {
    throw new ConfigError(`configuration must be a map with apiVersion and kind, got ${showValue(obj)}`);
  }
  if (obj.apiVersion === undefined || obj.apiVersion === null || obj.apiVersion === '') {
    throw new ConfigError(`missing apiVersion: must be ${API_VERSION}`, 'apiVersion');
  }
  if (obj.apiVersion !== API_VERSION) {
    throw invalidField('apiVersion', obj.apiVersion, `must be ${API_VERSION}`);
  }
  if (obj.kind === undefined || obj.kind === null || obj.kind === '') {
    throw new ConfigError(`missing kind: must be ${KIND}`, 'kind');
  }
  if (obj.kind !== KIND) throw invalidField('kind', obj.kind, `must be ${KIND}`);
  const problems: ConfigError[] = [];
  const checked = check(SCHEMA, obj, '', problems) as PartialConfiguration;
  throwAll(problems);
  return checked;
}

/** Prefixes an error with the config file it came from. */
export function withSource(e: unknown, source: string): ConfigError {
  if (e instanceof ConfigErrors) return new ConfigErrors(e.problems, `config file ${showValue(source)}: `);
  if (e instanceof ConfigError) {
    return new ConfigError(`config file ${showValue(source)}: ${e.message}`, e.field, e.value, e.reason);
  }
  return new ConfigError(`config file ${showValue(source)}: ${e instanceof Error ? e.message : String(e)}`);
}

/** Parses YAML or JSON text of a KubeProxyConfiguration; `source` names it in errors. */
export function parseConfigText(text: string, source = '<input>'): PartialConfiguration {
  let docs: unknown[];
  try {
    docs = parseAllDocuments(text, { uniqueKeys: true, prettyErrors: false })
      .map((doc) => {
        const problem = doc.errors[0] ?? doc.warnings[0];
        if (problem) throw problem;
        return doc.toJS({ maxAliasCount: 100 }) as unknown;
      })
      .filter((v) => v !== null && v !== undefined);
  } catch (e) {
    const msg = (e instanceof Error ? e.message : String(e)).split('\n')[0];
    throw new ConfigError(`config file ${showValue(source)} is not valid YAML or JSON: ${msg}`);
  }
  if (docs.length > 1) {
    throw new ConfigError(`config file ${showValue(source)} holds ${docs.length} documents; expected one KubeProxyConfiguration`);
  }
  try {
    return checkConfigObject(docs[0] ?? {});
  } catch (e) {
    throw withSource(e, source);
  }
}

/** Reads and checks a configuration file, without defaulting. */
export function readConfigFile(path: string): PartialConfiguration {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    throw new ConfigError(`cannot read config file ${showValue(path)}: ${reason}`, 'config', path);
  }
  return parseConfigText(text, path);
}

/** Reads a configuration file, applies upstream defaults and validates the result. */
export function loadConfigFile(path: string): KubeProxyConfiguration {
  const partial = readConfigFile(path);
  try {
    const config = applyDefaults(partial);
    validateConfiguration(config);
    return config;
  } catch (e) {
    throw withSource(e, path);
  }
}
