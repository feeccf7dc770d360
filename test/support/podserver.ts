// The pod server lives in src/sandbox (the sandbox command uses it too); tests keep importing it from here.
export * from '../../src/sandbox/podserver.js';
