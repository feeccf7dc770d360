// `--proxy-mode iptables` end to end on a node whose kubelet uses iptables-nft.
import { iptablesModeSuite } from './iptables-scenarios.js';

iptablesModeSuite('nft');
