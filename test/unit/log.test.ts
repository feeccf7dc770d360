// Leveled logging: what a hidden level costs. A message or fields given as functions are only
// built when the level is shown, so per-event logging costs nothing at the default verbosity.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getVerbosity, log, setLogWriter, setVerbosity } from '../../src/log.js';

test('a hidden level builds neither its message nor its fields; a shown one prints both', () => {
  const lines: string[] = [];
  const prevWriter = setLogWriter((l) => lines.push(l));
  const prevV = getVerbosity();
  try {
    let built = 0;
    const fields = (): Record<string, unknown> => {
      built++;
      return { kind: 'Service', name: 'ns/web' };
    };
    setVerbosity(1);
    log.v(4, () => `built ${++built}`, fields);
    assert.equal(built, 0);
    assert.deepEqual(lines, []);
    setVerbosity(4);
    log.v(4, 'change received', fields);
    assert.equal(built, 1);
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /^I\S+ change received kind="Service" name="ns\/web"\n$/);
  } finally {
    setVerbosity(prevV);
    setLogWriter(prevWriter);
  }
});
