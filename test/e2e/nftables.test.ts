// `--proxy-mode nftables` end to end: every shared scenario on a real kernel.
import { modeSuite } from './scenarios.js';

modeSuite('nftables mode on a real kernel', { mode: 'nftables' });
