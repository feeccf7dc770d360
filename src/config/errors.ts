/**
 * A configuration problem a user can fix: bad file, bad field, bad flag. The message is
 * complete on its own (it names the field or flag and the offending value) so the CLI can
 * print it as is and exit non-zero.
 */
export class ConfigError extends Error {
  /** Field path (`iptables.syncPeriod`) or flag (`--proxy-mode`) at fault, when known. */
  readonly field: string | undefined;
  readonly value: unknown;
  /** What is wrong with the value, without the field and value (for re-wording by the CLI). */
  readonly reason: string | undefined;

  constructor(message: string, field?: string, value?: unknown, reason?: string) {
    super(message);
    this.name = 'ConfigError';
    this.field = field;
    this.value = value;
    this.reason = reason;
  }
}

/** Renders a value for an error message: strings quoted, everything else as JSON. */
export function showValue(value: unknown): string {
  if (value === undefined) return 'undefined';
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

export function invalidField(field: string, value: unknown, reason: string): ConfigError {
  return new ConfigError(`invalid value ${showValue(value)} for ${field}: ${reason}`, field, value, reason);
}

/** Several problems found together (a config file with more than one mistake), each with its field. */
export class ConfigErrors extends ConfigError {
  readonly problems: readonly ConfigError[];

  constructor(problems: readonly ConfigError[], prefix = '') {
    super(`${prefix}${problems.length} problems:\n${problems.map((p) => `  - ${p.message}`).join('\n')}`, problems[0]?.field, problems[0]?.value, problems[0]?.reason);
    this.name = 'ConfigErrors';
    this.problems = problems;
  }
}

/** One problem as itself, several as a ConfigErrors; nothing when the list is empty. */
export function throwAll(problems: readonly ConfigError[], prefix = ''): void {
  if (problems.length === 1) throw prefix === '' ? problems[0]! : new ConfigError(`${prefix}${problems[0]!.message}`, problems[0]!.field, problems[0]!.value, problems[0]!.reason);
  if (problems.length > 1) throw new ConfigErrors(problems, prefix);
}
