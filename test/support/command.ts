// The command users run: the bundled CLI (scripts/bundle.mjs), which tests start as a process.
import { fileURLToPath } from 'node:url';

export const COMMAND = fileURLToPath(new URL('../../src/cli/kube-proxy-ts.js', import.meta.url));
