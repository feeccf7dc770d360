// Bundles the compiled CLI (dist/src/cli/main.js) and the packages it imports into one file,
// dist/src/cli/kube-proxy-ts.js, the command users run. Node 20 resolves, reads and links each
// module of an import graph separately: for ~270 modules that was a third of the proxy's start
// (0.29 s to print --version, 0.19 s bundled), paid again at every restart.
// The sandbox stays a separate module graph, loaded from dist/src/sandbox when asked for: it
// starts its own processes from files beside it.
import { build } from 'esbuild';
import { chmodSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const outfile = `${root}dist/src/cli/kube-proxy-ts.js`;

await build({
  // Each module's code opens with a `// dist/src/<path>.js` line, relative to this directory:
  // --vmodule finds the calling module by it (src/log.ts).
  absWorkingDir: root,
  entryPoints: [`${root}dist/src/cli/main.js`],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['../sandbox/index.js'],
  // CommonJS packages (prom-client) call require() for Node's built-in modules.
  banner: { js: "import { createRequire as createRequireForBundle } from 'node:module';\nconst require = createRequireForBundle(import.meta.url);" },
  // Read only with NODE_OPTIONS=--enable-source-maps: stack traces then name the TypeScript sources.
  sourcemap: 'linked',
  // main.js's shebang line is kept.
  logLevel: 'warning',
});
chmodSync(outfile, 0o755);
if (!readFileSync(outfile, 'utf8').includes('\n// dist/src/log.js\n')) throw new Error(`${outfile}: no module markers; --vmodule would not work`);
