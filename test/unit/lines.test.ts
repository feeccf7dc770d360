import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LineSplitter } from '../../src/lines.js';

describe('LineSplitter', () => {
  it('hands out whole lines however the text is cut, and keeps the unfinished rest', () => {
    const got: string[] = [];
    const lines = new LineSplitter((l) => got.push(l));
    for (const piece of ['fir', 'st\nsec', 'ond\n\nth', 'ird\nfour', 'th']) lines.push(piece);
    assert.deepEqual(got, ['first', 'second', '', 'third']);
    assert.equal(lines.takeRest(), 'fourth');
    assert.equal(lines.takeRest(), '');
  });

  it('keeps a carriage return (the caller trims when its peer may send one)', () => {
    const got: string[] = [];
    const lines = new LineSplitter((l) => got.push(l));
    lines.push('a\r\nb\n');
    assert.deepEqual(got, ['a\r', 'b']);
  });

  it('does not hand out a line again after its handler threw', () => {
    const got: string[] = [];
    const lines = new LineSplitter((l) => {
      got.push(l);
      if (l === 'bad') throw new Error('bad line');
    });
    assert.throws(() => lines.push('bad\nlost with it\nrest'));
    lines.push('\n');
    assert.deepEqual(got, ['bad', 'rest']);
  });
});
