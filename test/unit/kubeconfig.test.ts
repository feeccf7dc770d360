// Kubeconfig loading and per-request credentials, checked by what an API server receives:
// an echo server reports the Authorization header, and a TLS server that demands a client
// certificate (from a CA made here with openssl) reports the certificate's common name.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { Credentials } from '../../src/source/credentials.js';
import { KubeClient, loadKubeConfig } from '../../src/source/kubeclient.js';
import { tempFiles } from '../support/tempfiles.js';

const files = tempFiles('kpts-kubeconfig-test-');
let n = 0;

/** Writes a one-cluster, one-user kubeconfig into its own directory and returns its path. */
function kubeconfig(cluster: Record<string, unknown>, user: Record<string, unknown>, extra: Record<string, unknown> = {}): string {
  const dir = join(files.dir, `k${n++}`);
  mkdirSync(dir);
  const path = join(dir, 'config');
  writeFileSync(
    path,
    stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'c', cluster }],
      users: [{ name: 'u', user }],
      contexts: [{ name: 'ctx', context: { cluster: 'c', user: 'u' } }],
      'current-context': 'ctx',
      ...extra,
    }),
  );
  return path;
}

/** A plain http server that answers each request with the Authorization header it got. */
let echo: http.Server;
let echoUrl = '';
before(async () => {
  echo = http.createServer((req, res) => {
    res.writeHead(req.headers.authorization === 'Bearer bad' ? 401 : 200).end(JSON.stringify({ auth: req.headers.authorization ?? null }));
  });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  echoUrl = `http://127.0.0.1:${(echo.address() as AddressInfo).port}`;
});
after(() => echo.close());

async function get(client: KubeClient): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await client.request('/api/v1/nodes');
  return { status: res.status, body: (await res.body.json()) as Record<string, unknown> };
}

async function authSeen(path: string, opts: { execTimeoutMs?: number } = {}): Promise<unknown> {
  const client = new KubeClient(loadKubeConfig({ kubeconfig: path }), opts);
  try {
    return (await get(client)).body.auth;
  } finally {
    await client.close();
  }
}

function withEnv<T>(vars: Record<string, string | undefined>, fn: () => T): T {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const set = (v: Record<string, string | undefined>): void => {
    for (const [k, x] of Object.entries(v)) {
      if (x === undefined) delete process.env[k];
      else process.env[k] = x;
    }
  };
  set(vars);
  try {
    return fn();
  } finally {
    set(saved);
  }
}

describe('kubeconfig credentials', () => {
  test('a bearer token, and username/password as basic auth', async () => {
    assert.equal(await authSeen(kubeconfig({ server: echoUrl }, { token: 'tok' })), 'Bearer tok');
    assert.equal(await authSeen(kubeconfig({ server: echoUrl }, { username: 'ann', password: 'pw' })), `Basic ${Buffer.from('ann:pw').toString('base64')}`);
    assert.equal(await authSeen(kubeconfig({ server: echoUrl }, {})), null);
  });

  test('tokenFile is relative to the kubeconfig and a rotated token is used at the next request', async () => {
    const path = kubeconfig({ server: echoUrl }, { tokenFile: 'token' });
    const tokenFile = join(path, '..', 'token');
    writeFileSync(tokenFile, 'one\n');
    const client = KubeClient.load({ kubeconfig: path });
    try {
      assert.equal((await get(client)).body.auth, 'Bearer one');
      writeFileSync(tokenFile, 'second\n');
      assert.equal((await get(client)).body.auth, 'Bearer second');
    } finally {
      await client.close();
    }
  });
});

describe('exec credential plugins', () => {
  /** A shell-script plugin; each run appends a line to `runs` and KUBERNETES_EXEC_INFO to `info`. */
  function plugin(body: string): { command: string; runs: () => number; info: string } {
    const dir = join(files.dir, `p${n++}`);
    mkdirSync(dir);
    const command = join(dir, 'plugin.sh');
    const runs = join(dir, 'runs');
    writeFileSync(runs, '');
    writeFileSync(command, `#!/bin/sh\necho run >> ${runs}\nprintf '%s' "$KUBERNETES_EXEC_INFO" > ${dir}/info\n${body}\n`);
    chmodSync(command, 0o755);
    return { command, runs: () => readFileSync(runs, 'utf8').split('\n').length - 1, info: join(dir, 'info') };
  }
  const credential = (status: Record<string, unknown>, apiVersion = 'client.authentication.k8s.io/v1'): string =>
    `cat <<'EOF'\n${JSON.stringify({ apiVersion, kind: 'ExecCredential', status })}\nEOF`;

  test('the token is cached until its expiration time; env and KUBERNETES_EXEC_INFO reach the plugin', async () => {
    const p = plugin(`[ "$GREETING" = hi ] || exit 3\n${credential({ token: 'exec-tok', expirationTimestamp: new Date(Date.now() + 3_600_000).toISOString() })}`);
    const path = kubeconfig({ server: echoUrl }, { exec: { apiVersion: 'client.authentication.k8s.io/v1', command: p.command, args: [], env: [{ name: 'GREETING', value: 'hi' }] } });
    const client = KubeClient.load({ kubeconfig: path });
    try {
      assert.equal((await get(client)).body.auth, 'Bearer exec-tok');
      assert.equal((await get(client)).body.auth, 'Bearer exec-tok');
      assert.equal(p.runs(), 1, 'a credential that has not expired is reused');
    } finally {
      await client.close();
    }
    const info = JSON.parse(readFileSync(p.info, 'utf8')) as { apiVersion: string; kind: string; spec: { interactive: boolean } };
    assert.deepEqual(info, { apiVersion: 'client.authentication.k8s.io/v1', kind: 'ExecCredential', spec: { interactive: false } });
  });

  test('an expired credential, or one the server refuses, makes the plugin run again (v1beta1 too)', async () => {
    const beta = 'client.authentication.k8s.io/v1beta1';
    const expired = plugin(credential({ token: 'old', expirationTimestamp: '2020-01-01T00:00:00Z' }, beta));
    const refused = plugin(credential({ token: 'bad' }, beta));
    for (const [p, runs] of [
      [expired, 2],
      [refused, 2],
    ] as const) {
      const client = KubeClient.load({ kubeconfig: kubeconfig({ server: echoUrl }, { exec: { apiVersion: beta, command: p.command } }) });
      try {
        await get(client);
        await get(client);
        assert.equal(p.runs(), runs);
      } finally {
        await client.close();
      }
    }
  });

  test('a failing, wrong or slow plugin is a clear error', async () => {
    const exec = (command: string): Record<string, unknown> => ({ exec: { apiVersion: 'client.authentication.k8s.io/v1', command } });
    const failing = plugin('echo "login required" >&2\nexit 4');
    await assert.rejects(authSeen(kubeconfig({ server: echoUrl }, exec(failing.command))), /exec credential plugin .*plugin\.sh \(user "u"\) failed \(exit status 4\): login required/);
    const wrong = plugin(credential({ token: 't' }, 'client.authentication.k8s.io/v1beta1'));
    await assert.rejects(authSeen(kubeconfig({ server: echoUrl }, exec(wrong.command))), /unusable answer: apiVersion .*v1beta1.* is not the client.authentication.k8s.io\/v1 asked for/);
    const slow = plugin(`exec sleep 5`);
    await assert.rejects(authSeen(kubeconfig({ server: echoUrl }, exec(slow.command)), { execTimeoutMs: 300 }), /did not finish within 300 ms/);
    await assert.rejects(authSeen(kubeconfig({ server: echoUrl }, exec('no-such-plugin-xyz'))), /no-such-plugin-xyz .* not found/);
  });
});

describe('TLS: CA, client certificates, server name, skip-verify', () => {
  let dir = '';
  let server: https.Server;
  let url = '';
  const pem = (name: string): string => readFileSync(join(dir, name), 'utf8');
  const b64 = (name: string): string => Buffer.from(pem(name)).toString('base64');

  before(async () => {
    dir = join(files.dir, 'pki');
    mkdirSync(dir);
    const ssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    ssl('req', '-x509', ...ec, '-subj', '/CN=test-ca', '-days', '1', '-keyout', 'ca.key', '-out', 'ca.crt');
    writeFileSync(join(dir, 'san.ext'), 'subjectAltName=DNS:api.test\n');
    for (const [name, cn, ext] of [
      ['server', 'api', ['-extfile', 'san.ext']],
      ['client', 'system:kube-proxy', []],
    ] as const) {
      ssl('req', ...ec, '-subj', `/CN=${cn}`, '-keyout', `${name}.key`, '-out', `${name}.csr`);
      ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1', '-out', `${name}.crt`, ...ext);
    }
    server = https.createServer({ key: pem('server.key'), cert: pem('server.crt'), ca: pem('ca.crt'), requestCert: true, rejectUnauthorized: false }, (req, res) => {
      const peer = (req.socket as import('node:tls').TLSSocket).getPeerCertificate();
      res.end(JSON.stringify({ cn: peer.subject?.CN ?? null, auth: req.headers.authorization ?? null }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => server.close());

  async function seen(cluster: Record<string, unknown>, user: Record<string, unknown>): Promise<Record<string, unknown>> {
    const client = KubeClient.load({ kubeconfig: kubeconfig({ server: url, ...cluster }, user) });
    try {
      return (await get(client)).body;
    } finally {
      await client.close();
    }
  }

  test('client certificate and key from files (relative) or inline data, CA from data or file, checked against tls-server-name', async () => {
    const fromFiles = { 'client-certificate': '../pki/client.crt', 'client-key': '../pki/client.key' };
    assert.deepEqual(await seen({ 'certificate-authority-data': b64('ca.crt'), 'tls-server-name': 'api.test' }, fromFiles), { cn: 'system:kube-proxy', auth: null });
    const inline = { 'client-certificate-data': b64('client.crt'), 'client-key-data': b64('client.key'), token: 'with-cert' };
    assert.deepEqual(await seen({ 'certificate-authority': join(dir, 'ca.crt'), 'tls-server-name': 'api.test' }, inline), { cn: 'system:kube-proxy', auth: 'Bearer with-cert' });
  });

  test('the server certificate is verified unless insecure-skip-tls-verify', async () => {
    await assert.rejects(seen({}, { token: 't' }), { code: 'SELF_SIGNED_CERT_IN_CHAIN' }, 'a CA the client does not trust');
    await assert.rejects(seen({ 'certificate-authority-data': b64('ca.crt') }, { token: 't' }), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' }, 'the certificate is for api.test, not 127.0.0.1');
    assert.deepEqual(await seen({ 'insecure-skip-tls-verify': true }, { token: 't' }), { cn: null, auth: 'Bearer t' });
  });
});

describe('loading: KUBECONFIG merge, --master, in-cluster, errors', () => {
  test('KUBECONFIG: missing files are skipped, the first file wins per name and for current-context', () => {
    const first = kubeconfig({ server: 'https://first:6443' }, { token: 'a' });
    const second = kubeconfig({ server: 'https://second:6443' }, { token: 'b' }, {
      contexts: [{ name: 'other', context: { cluster: 'c', user: 'u', namespace: 'ns2' } }],
      'current-context': 'other',
    });
    const kc = withEnv({ KUBECONFIG: ['/nonexistent/k', first, second].join(':') }, () => loadKubeConfig({}));
    assert.equal(kc.cluster.server, 'https://first:6443');
    assert.equal(kc.user.token, 'a');
    const noCurrent = kubeconfig({ server: 'https://third:6443' }, {}, { 'current-context': '' });
    const merged = withEnv({ KUBECONFIG: [noCurrent, second].join(':') }, () => loadKubeConfig({}));
    assert.equal(merged.namespace, 'ns2', "the second file's current-context, its context from the second file");
    assert.equal(merged.cluster.server, 'https://third:6443', 'cluster "c" from the first file that has it');
    assert.throws(() => withEnv({ KUBECONFIG: '/nonexistent/a:/nonexistent/b' }, () => loadKubeConfig({})), /none of the KUBECONFIG files exist/);
  });

  test('--master replaces the server of a kubeconfig, and alone means no credentials', async () => {
    const kc = loadKubeConfig({ kubeconfig: kubeconfig({ server: 'https://unused:1' }, { token: 'm' }), master: echoUrl });
    assert.equal(kc.cluster.server, echoUrl);
    const alone = withEnv({ KUBECONFIG: undefined }, () => new KubeClient(loadKubeConfig({ master: echoUrl })));
    try {
      assert.equal((await get(alone)).body.auth, null);
    } finally {
      await alone.close();
    }
  });

  test('in-cluster: the server from the environment (IPv6 bracketed), the token re-read when it changes', async () => {
    const root = join(files.dir, 'incluster');
    const sa = join(root, 'var/run/secrets/kubernetes.io/serviceaccount');
    mkdirSync(sa, { recursive: true });
    writeFileSync(join(sa, 'token'), 'sa-1');
    const env = { KUBECONFIG: undefined, KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' };
    assert.equal(withEnv(env, () => loadKubeConfig({ inClusterPathPrefix: root })).cluster.server, 'https://[fd00::1]:443');
    const credentials = new Credentials(withEnv(env, () => loadKubeConfig({ inClusterPathPrefix: root })));
    assert.equal((await credentials.get()).headers.Authorization, 'Bearer sa-1');
    writeFileSync(join(sa, 'token'), 'sa-two');
    assert.equal((await credentials.get()).headers.Authorization, 'Bearer sa-two');
    assert.throws(() => withEnv({ ...env, KUBERNETES_SERVICE_HOST: '10.0.0.1' }, () => loadKubeConfig({ inClusterPathPrefix: join(files.dir, 'nothing') })), /service account token .* does not exist/);
  });

  test('clear errors name the file and what is wrong', () => {
    const errs: Array<[string, RegExp]> = [
      [kubeconfig({ server: 'https://x' }, {}, { 'current-context': 'nope' }), /: current-context "nope" is not among its contexts$/],
      [kubeconfig({ server: 'https://x' }, {}, { contexts: [{ name: 'ctx', context: { cluster: 'gone', user: 'u' } }] }), /: has no cluster for context "ctx"$/],
      [kubeconfig({ server: 'https://x' }, {}, { contexts: [{ name: 'ctx', context: { cluster: 'c', user: 'gone' } }] }), /context "ctx" names user "gone", which is not among its users/],
      [kubeconfig({}, {}), /: cluster "c" has no server URL$/],
      [kubeconfig({ server: 'ftp://x' }, {}), /invalid API server URL "ftp:\/\/x": scheme must be http or https/],
      [kubeconfig({ server: 'https://x' }, { 'auth-provider': { name: 'gcp', config: {} } }), /user "u" uses auth-provider "gcp", which kubectl and client-go no longer support; use an exec credential plugin/],
      [kubeconfig({ server: 'https://x' }, { exec: { command: 'x', apiVersion: 'client.authentication.k8s.io/v1alpha1' } }), /exec.apiVersion "client.authentication.k8s.io\/v1alpha1" is not/],
      [kubeconfig({ server: 'https://x' }, { token: 't', username: 'u' }), /a bearer token and username\/password are both set/],
      [kubeconfig({ server: 'https://x' }, { 'client-certificate': 'c.crt' }), /needs both the certificate and its key/],
      [kubeconfig({ server: 'https://x', 'insecure-skip-tls-verify': true, 'certificate-authority': 'ca' }, {}), /insecure-skip-tls-verify and a certificate authority are both set/],
      [kubeconfig({ server: 'https://x', 'certificate-authority-data': '%%%' }, {}), /certificate-authority-data is not base64/],
    ];
    for (const [path, re] of errs) {
      assert.throws(() => loadKubeConfig({ kubeconfig: path }), (e: Error) => {
        assert.ok(e.message.startsWith(`kubeconfig ${path}: `), e.message);
        assert.match(e.message, re);
        return true;
      });
    }
  });
});
