// `--proxy-mode iptables` end to end on a node whose kubelet uses iptables-legacy.
import { iptablesModeSuite } from './iptables-scenarios.js';

iptablesModeSuite('legacy');
