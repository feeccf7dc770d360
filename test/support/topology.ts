// The topology lives in src/sandbox (the sandbox command uses it too); tests keep importing it from here.
export * from '../../src/sandbox/topology.js';
export * from '../../src/sandbox/layout.js';
