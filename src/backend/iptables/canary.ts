// The canary chains the iptables backend keeps in mangle, nat and filter. A firewall reload that
// flushes a table (`iptables -F`) empties the canary; one that deletes chains (`-X`) removes it.
// Either way the canary no longer holds its marker rule, and the backend knows to resync. Pure.

export const CANARY_CHAIN = 'KUBE-PROXY-CANARY';
export const CANARY_TABLES = ['mangle', 'nat', 'filter'] as const;
/** The canary's only rule, as iptables-save prints it after `-A KUBE-PROXY-CANARY `. */
export const CANARY_RULE = '-m comment --comment "kube-proxy canary" -j RETURN';
/** The same rule as iptables arguments. */
export const CANARY_RULE_ARGS = ['-m', 'comment', '--comment', 'kube-proxy canary', '-j', 'RETURN'];
