// `explain` in iptables mode: the restore-input reader, the rule grammar and the tracer.
export { traceIptables } from './trace.js';
export { parseRestoreInput, BUILTIN_CHAINS, type IptTableName, type RestoreChain, type RestoreInput, type RestoreTable } from './restore.js';
export { parseRule, tokenize, IptParseError, type IptMatch, type IptRule, type IptTarget, type MarkOp } from './rule.js';
export { UPSTREAM_JUMPS, jumpRuleSpec, kernelOrderJumps, restoreTables, withUpstreamJumps, type UpstreamJump } from './hooks.js';
