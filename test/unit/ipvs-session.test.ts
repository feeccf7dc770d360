// The long-lived tool sessions of IPVS partial syncs against a fake tool (a shell loop): the
// barrier resolves only once every line before it ran, errors and a dead or silent tool reject
// and end the session, and the pool replaces an ended session.
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ipvsadmSession, SessionError, ToolSession, type SessionTool } from '../../src/backend/ipvs/session.js';

// Logs each line it applies; `slow` makes it take a while first, `bad` prints an error, `die`
// exits, `hang` stops answering; `-L --timeout` is the barrier, answered after a prompt (noise)
// when the second argument is "prompt".
const FAKE = `#!/bin/sh
log="$1"
while IFS= read -r l; do
  case "$l" in
    "-L --timeout") [ "$2" = prompt ] && printf 'fake> '; echo 'Timeout (tcp tcpfin udp): 900 120 300' ;;
    slow*) sleep 0.3; echo "$l" >> "$log" ;;
    bad*) echo "Service not defined" >&2 ;;
    die*) exit 3 ;;
    hang*) sleep 30 ;;
    *) echo "$l" >> "$log" ;;
  esac
done
`;

describe('IPVS tool sessions (fake tool)', () => {
  let dir: string;
  let tool: SessionTool;
  const applied = (): string => readFileSync(join(dir, 'applied'), 'utf8');

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'ipvs-session-'));
    writeFileSync(join(dir, 'fake'), FAKE);
    chmodSync(join(dir, 'fake'), 0o755);
    writeFileSync(join(dir, 'applied'), '');
    tool = { argv: [join(dir, 'fake'), join(dir, 'applied'), 'prompt'], barrier: '-L --timeout', done: /^Timeout \(tcp tcpfin udp\):/, noise: /^(fake> )+/ };
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('run resolves only after every line before the barrier was applied, and the session is reused', async () => {
    const s = new ToolSession(tool, []);
    await s.run('slow-1\nslow-2\n');
    assert.equal(applied(), 'slow-1\nslow-2\n');
    await s.run('fast-3\n');
    assert.equal(applied(), 'slow-1\nslow-2\nfast-3\n');
    assert.equal(s.dead, false);
    s.close();
  });

  test('batches from concurrent callers run one at a time, in call order', async () => {
    writeFileSync(join(dir, 'applied'), '');
    const s = new ToolSession(tool, []);
    await Promise.all([s.run('slow-a\n'), s.run('b\n'), s.run('slow-c\n')]);
    assert.equal(applied(), 'slow-a\nb\nslow-c\n');
    s.close();
  });

  test('an error line before the barrier rejects with the tool’s text and ends the session', async () => {
    const s = new ToolSession(tool, []);
    await assert.rejects(s.run('ok\nbad one\n'), (e: unknown) => e instanceof SessionError && /Service not defined/.test(e.message));
    assert.equal(s.dead, true);
    await assert.rejects(s.run('ok\n'), SessionError);
  });

  test('a tool that exits mid-batch rejects instead of hanging', async () => {
    const s = new ToolSession(tool, []);
    await assert.rejects(s.run('die now\n'), /exited/);
    assert.equal(s.dead, true);
  });

  test('a tool that stops answering rejects after the timeout and is killed', async () => {
    const s = new ToolSession(tool, []);
    const t = Date.now();
    await assert.rejects(s.run('hang\n', 300), /no answer within 0\.3 s/);
    assert.ok(Date.now() - t < 5_000);
    assert.equal(s.dead, true);
  });

  test('the pool replaces an ended session with a new one', async () => {
    // Through a prefix that puts a fake ipvsadm first on PATH.
    writeFileSync(join(dir, 'ipvsadm'), `#!/bin/sh\nexec ${join(dir, 'fake')} ${join(dir, 'applied')}\n`);
    chmodSync(join(dir, 'ipvsadm'), 0o755);
    const exec = { wrap: ['env', `PATH=${dir}:/usr/bin:/bin`] };
    const first = ipvsadmSession(exec);
    assert.equal(ipvsadmSession(exec), first);
    await assert.rejects(first.run('bad\n'), SessionError);
    const second = ipvsadmSession(exec);
    assert.notEqual(second, first);
    writeFileSync(join(dir, 'applied'), '');
    await second.run('after\n');
    assert.equal(applied(), 'after\n');
    second.close();
  });
});
