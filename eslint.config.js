// Lint: promises must be awaited or explicitly voided, imports must not form cycles, and a
// layer never imports a higher one (DESIGN.md: data flows one way).
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';
import importX from 'eslint-plugin-import-x';
import tseslint from 'typescript-eslint';

// Lowest first. Code in a layer may import its own and lower layers only; log.ts sits below all.
const LAYERS = [
  ['src/net'],
  ['src/model'],
  ['src/source', 'src/node'],
  ['src/runner'],
  ['src/backend'],
  ['src/config', 'src/explain'],
  ['src/server', 'src/proxy.ts', 'src/sandbox'],
  ['src/cli'],
];

const layerZones = LAYERS.slice(0, -1).flatMap((layer, i) => {
  const higher = LAYERS.slice(i + 1).flat();
  return layer.map((target) => ({
    target: `./${target}`,
    from: higher.map((h) => `./${h}`),
    message: `${target} is below ${higher.join(', ')}: lower layers never import higher ones (see DESIGN.md).`,
  }));
});

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**'] },
  {
    files: ['src/**/*.ts', 'test/**/*.ts', 'bench/**/*.ts'],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { '@typescript-eslint': tseslint.plugin, 'import-x': importX },
    settings: {
      // import-x must parse the imported .ts files itself to follow cycles through them.
      'import-x/extensions': ['.ts', '.js'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
      'import-x/resolver-next': [createTypeScriptImportResolver({ project: './tsconfig.json' })],
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // node:test runs what test() and describe() return itself; nothing to await there.
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'it', 'describe', 'suite'] }] },
      ],
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      'import-x/no-restricted-paths': [
        'error',
        {
          zones: [
            ...layerZones,
            { target: './src', from: ['./test', './bench'], message: 'the product never imports its tests or benchmarks.' },
            { target: './src/log.ts', from: './src', except: ['./log.ts'], message: 'log.ts is below every layer.' },
          ],
        },
      ],
    },
  },
);
