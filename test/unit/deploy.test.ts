// The deployment files: every manifest parses, the DaemonSet follows upstream kube-proxy's
// conventions, the ConfigMap's configuration passes our own flag parsing and validation
// exactly as the container runs it, and its kubeconfig authenticates with the mounted
// service-account token. (The ClusterRole is checked against recorded API calls in
// test/e2e/node-agent.test.ts.)
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { parseAllDocuments, parse } from 'yaml';
import { parseCommandLine } from '../../src/cli/flags.js';
import { KubeClient } from '../../src/source/kubeclient.js';
import { FakeApiServer } from '../support/fake-apiserver.js';
import { tempFiles } from '../support/tempfiles.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const DEPLOY = join(ROOT, 'deploy');

// Manifests are free-form YAML; the assertions say what shape they must have.
type Obj = Record<string, any>;

function manifests(): Obj[] {
  const out: Obj[] = [];
  for (const f of readdirSync(DEPLOY).filter((n) => n.endsWith('.yaml') && n !== 'kustomization.yaml')) {
    for (const doc of parseAllDocuments(readFileSync(join(DEPLOY, f), 'utf8'))) {
      assert.deepEqual(doc.errors, [], `${f} parses`);
      out.push(doc.toJS() as Obj);
    }
  }
  return out;
}

const find = (kind: string, name: string): Obj => {
  const o = manifests().find((m) => m.kind === kind && m.metadata?.name === name);
  assert.ok(o, `${kind} ${name} exists`);
  return o;
};

describe('deploy/', () => {
  test('the kustomization lists every manifest, all in kube-system', () => {
    const k = parse(readFileSync(join(DEPLOY, 'kustomization.yaml'), 'utf8')) as Obj;
    const files = readdirSync(DEPLOY).filter((n) => n.endsWith('.yaml') && n !== 'kustomization.yaml').sort();
    assert.deepEqual([...k.resources].sort(), files);
    assert.equal(k.namespace, 'kube-system');
    for (const m of manifests()) {
      if (!m.kind.startsWith('Cluster')) assert.equal(m.metadata.namespace, 'kube-system', `${m.kind} ${m.metadata.name}`);
    }
  });

  test("the DaemonSet follows upstream's conventions", () => {
    const ds = find('DaemonSet', 'kube-proxy');
    assert.equal(ds.metadata.namespace, 'kube-system');
    assert.deepEqual(ds.spec.selector.matchLabels, { 'k8s-app': 'kube-proxy' });
    assert.equal(ds.spec.template.metadata.labels['k8s-app'], 'kube-proxy');
    assert.equal(ds.spec.updateStrategy.type, 'RollingUpdate');
    const pod = ds.spec.template.spec;
    assert.equal(pod.hostNetwork, true);
    assert.equal(pod.priorityClassName, 'system-node-critical');
    assert.deepEqual(pod.tolerations, [{ operator: 'Exists' }], 'tolerates every taint');
    assert.equal(pod.serviceAccountName, find('ServiceAccount', 'kube-proxy').metadata.name);
    const [c] = pod.containers;
    assert.equal(c.securityContext.privileged, true);
    assert.ok(c.command.includes('--hostname-override=$(NODE_NAME)'));
    assert.deepEqual(c.env.find((e: Obj) => e.name === 'NODE_NAME').valueFrom, { fieldRef: { fieldPath: 'spec.nodeName' } });
    const mount = (name: string): Obj => c.volumeMounts.find((m: Obj) => m.name === name);
    const volume = (name: string): Obj => pod.volumes.find((v: Obj) => v.name === name);
    assert.equal(mount('xtables-lock').mountPath, '/run/xtables.lock');
    assert.deepEqual(volume('xtables-lock').hostPath, { path: '/run/xtables.lock', type: 'FileOrCreate' });
    assert.equal(mount('lib-modules').mountPath, '/lib/modules');
    assert.equal(mount('lib-modules').readOnly, true);
    assert.equal(volume('kube-proxy').configMap.name, 'kube-proxy');
  });

  test('the ConfigMap configuration passes our flag parsing and validation as the container runs it', () => {
    const ds = find('DaemonSet', 'kube-proxy');
    const cm = find('ConfigMap', 'kube-proxy');
    const [c] = ds.spec.template.spec.containers;
    const mountPath: string = c.volumeMounts.find((m: Obj) => m.name === 'kube-proxy').mountPath;
    const files = tempFiles('kpt-deploy-');
    for (const [k, v] of Object.entries(cm.data as Record<string, string>)) writeFileSync(join(files.dir, k), v);
    // The container's arguments, with the mount and the downward API resolved.
    const args = (c.command as string[]).slice(1).map((a) => a.replace(mountPath, files.dir).replace('$(NODE_NAME)', 'node-1'));
    const cmd = parseCommandLine(args, {});
    assert.equal(cmd.config.hostnameOverride, 'node-1');
    assert.equal(cmd.config.mode, 'nftables');
    assert.equal(cmd.config.clientConnection.kubeconfig, `${mountPath}/kubeconfig.conf`, 'the kubeconfig is the one beside it in the ConfigMap');
    assert.ok('kubeconfig.conf' in cm.data);
  });

  test("the ConfigMap's kubeconfig authenticates with the service-account token file, re-read on each request", async () => {
    const cm = find('ConfigMap', 'kube-proxy');
    const files = tempFiles('kpt-deploy-');
    const server = await FakeApiServer.start({ token: 'first-token' });
    try {
      const tokenFile = join(files.dir, 'token');
      writeFileSync(tokenFile, 'first-token\n');
      const kubeconfig = (cm.data['kubeconfig.conf'] as string)
        .replace('/var/run/secrets/kubernetes.io/serviceaccount/token', tokenFile)
        .replace(/^(\s*)certificate-authority: .*$/m, '$1insecure-skip-tls-verify: true')
        .replace(/server: .*/, `server: ${server.url}`);
      const path = join(files.dir, 'kubeconfig.conf');
      writeFileSync(path, kubeconfig);
      const client = KubeClient.load({ kubeconfig: path });
      const status = async (): Promise<number> => {
        const res = await client.request('/api/v1/services');
        await res.body.text();
        return res.status;
      };
      assert.equal(await status(), 200);
      writeFileSync(tokenFile, 'rotated-token\n');
      assert.equal(await status(), 401, 'the rotated file is read (and the fake server still wants the old token)');
      await client.close();
    } finally {
      await server.stop();
    }
  });

  test('the systemd unit restarts always, starts after the network is online, and reads /var/lib/kube-proxy', () => {
    const unit = readFileSync(join(DEPLOY, 'systemd/kube-proxy-ts.service'), 'utf8');
    assert.match(unit, /^Restart=always$/m);
    assert.match(unit, /^After=network-online\.target$/m);
    assert.match(unit, /^Wants=network-online\.target$/m);
    assert.match(unit, /--config=\/var\/lib\/kube-proxy\/kube-proxy-config\.yaml/);
  });

  test('the image installs the kernel tools with the same script as the test setup', () => {
    const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
    const setup = readFileSync(join(ROOT, 'scripts/setup.sh'), 'utf8');
    assert.match(dockerfile, /install-deps\.sh/);
    // The tests also need the test tools (user-mode-linux); the image only the kernel tools.
    assert.match(setup, /^bash scripts\/install-deps\.sh( --test-tools)?$/m);
    assert.match(dockerfile, /npm ci --omit=dev/);
    // The image's command is the bundle users run everywhere (package.json's bin), built in the build stage.
    assert.match(dockerfile, /^COPY scripts\/bundle\.mjs /m);
    assert.match(dockerfile, /ln -s \/app\/dist\/src\/cli\/kube-proxy-ts\.js \/usr\/local\/bin\/kube-proxy-ts\b/);
    assert.equal(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).bin['kube-proxy-ts'], 'dist/src/cli/kube-proxy-ts.js');
    const deps = readFileSync(join(ROOT, 'scripts/install-deps.sh'), 'utf8');
    for (const pkg of ['nftables', 'iptables', 'ipset', 'ipvsadm', 'conntrack', 'iproute2']) assert.match(deps, new RegExp(`=${pkg}\\b`));
  });
});
