// The `sandbox` command's arguments: the help text and the parsing into SandboxOptions, apart
// from index.ts, which runs what they ask for.
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { modeDescriptor, MODES, PROXY_MODE_NAMES, type ModeDescriptor } from '../backend/modes.js';

const EXAMPLES = fileURLToPath(new URL('../../../examples/', import.meta.url));
/** The modes the sandbox can run (ipvs needs a kernel with IP_VS). */
const SANDBOX_MODES = PROXY_MODE_NAMES;

export interface SandboxOptions {
  once: boolean;
  manifests: string;
  node: string;
  mode: ModeDescriptor;
  help: boolean;
  cleanup: boolean;
}

export const HELP = `Usage: kube-proxy-ts sandbox [--once] [--manifests DIR] [--hostname-override NAME] [--proxy-mode MODE]
       kube-proxy-ts sandbox --cleanup

Creates network namespaces for the nodes and pods of the manifests (default: the example
cluster), runs the proxy inside the proxy node's namespace, and shows each service answering
from its pods. Then keeps running until Ctrl-C (or the terminal closes), which removes everything.
Without root (or without the mode's tools) it runs the proxy with --dry-run and prints the ruleset.

  --once                       check, print, clean up and exit: 0 if every service answered as
                               expected (a dry run exits 0 after the first sync)
  --manifests DIR              the cluster to build (default: ${EXAMPLES})
  --hostname-override NAME     the node the proxy runs as (default: node-1; must have InternalIP 10.0.0.1)
  --proxy-mode MODE            ${SANDBOX_MODES.join(' or ')} (default: nftables)
  --cleanup                    remove what a sandbox killed without cleaning up left behind (its
                               namespaces, processes and temp files); running sandboxes are kept
`;

export function parseSandboxArgs(argv: string[]): SandboxOptions {
  const opts: SandboxOptions = { once: false, manifests: EXAMPLES, node: 'node-1', mode: MODES.nftables, help: false, cleanup: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.indexOf('=');
    const flag = arg.startsWith('--') && eq > 0 ? arg.slice(0, eq) : arg;
    const value = (): string => {
      if (eq > 0 && flag !== arg) return arg.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined || v === '') throw new Error(`${flag} needs a value`);
      return v;
    };
    if (flag === '--once' && flag === arg) opts.once = true;
    else if (flag === '--cleanup' && flag === arg) opts.cleanup = true;
    else if ((flag === '--help' || flag === '-h') && flag === arg) opts.help = true;
    else if (flag === '--manifests') opts.manifests = resolve(value());
    else if (flag === '--hostname-override') opts.node = value();
    else if (flag === '--proxy-mode') {
      const name = value();
      const mode = modeDescriptor(name);
      if (!mode) throw new Error(`--proxy-mode ${JSON.stringify(name)}: the sandbox runs ${SANDBOX_MODES.join(' or ')}`);
      opts.mode = mode;
    } else if (flag === '--node') throw new Error('--node is now --hostname-override, as for the proxy and explain');
    else throw new Error(`unknown argument ${JSON.stringify(arg)} (see --help)`);
  }
  return opts;
}
