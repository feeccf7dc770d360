// The proxy as its own process, pointed at an API server through a kubeconfig: it logs each
// change it receives and the snapshot that results.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, test } from 'node:test';
import type { Node } from '../../src/model/k8s.js';
import { FakeApiServer } from '../support/fake-apiserver.js';
import { kubeconfigFor } from '../support/kubeconfig.js';
import { COMMAND } from '../support/command.js';


let server: FakeApiServer;
let proc: ChildProcess | undefined;
let output = '';

function waitFor(pattern: RegExp, timeoutMs = 15000): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const tick = (): void => {
      if (pattern.test(output)) return resolve();
      if (Date.now() - started > timeoutMs) return reject(new Error(`timed out waiting for ${pattern}; output:\n${output}`));
      setTimeout(tick, 50);
    };
    tick();
  });
}

function service(name: string, ip: string, port: number): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'default' },
    spec: { type: 'ClusterIP', clusterIP: ip, clusterIPs: [ip], ports: [{ name: 'http', port, protocol: 'TCP', targetPort: 8080 }] },
  };
}

function slice(svc: string, ips: string[]): Record<string, unknown> {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${svc}-abc`, namespace: 'default', labels: { 'kubernetes.io/service-name': svc } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true }, nodeName: 'node-a' })),
  };
}

before(async () => {
  server = await FakeApiServer.start({ token: 'secret-token' });
  const node: Node = {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: 'node-a' },
    status: { addresses: [{ type: 'InternalIP', address: '10.0.0.1' }] },
  };
  server.create('Node', node);
  server.create('Service', service('web', '10.96.0.10', 80));
  server.create('EndpointSlice', slice('web', ['10.244.1.10', '10.244.1.11']));
  const kubeconfig = kubeconfigFor(server, { token: 'secret-token' });
  // A dry run: this test watches the source and the model, and must not touch this machine's rules.
  const args = ['--kubeconfig', kubeconfig, '--hostname-override', 'node-a', '--iptables-min-sync-period', '0s', '--dry-run', '--watch', '--v', '4'];
  proc = spawn(process.execPath, [COMMAND, ...args, '--healthz-bind-address=', '--metrics-bind-address='], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (output += d.toString()));
});

after(async () => {
  if (proc && proc.exitCode === null) {
    const exited = new Promise((r) => proc!.once('exit', r));
    proc.kill('SIGTERM');
    await exited;
  }
  await server.stop();
});

test('logs the initial objects and the snapshot built from them', async () => {
  await waitFor(/change received kind="Service" type="ADDED" object="default\/web"/);
  await waitFor(/default\/web:http TCP 10\.96\.0\.10:80\n\s+cluster endpoints: 10\.244\.1\.10:8080\(local\) 10\.244\.1\.11:8080\(local\)/);
});

test('a service created later is logged and appears in the next snapshot', async () => {
  server.create('Service', service('api', '10.96.0.20', 443));
  server.create('EndpointSlice', slice('api', ['10.244.2.5']));
  await waitFor(/change received kind="Service" type="ADDED" object="default\/api"/);
  await waitFor(/default\/api:http TCP 10\.96\.0\.20:443\n\s+cluster endpoints: 10\.244\.2\.5:8080\(local\)/);
});

test('a deleted service leaves the snapshot', async () => {
  server.remove('Service', 'default', 'web');
  await waitFor(/change received kind="Service" type="DELETED" object="default\/web"/);
  await waitFor(/snapshot IPv4 generation \d+: 1 service ports, 0 changed, 1 deleted/);
});

test('bad flags exit non-zero with one message naming the flag and value, starting nothing', async () => {
  const res = await new Promise<{ code: number | null; err: string }>((resolve) => {
    const p = spawn(process.execPath, [COMMAND, '--proxy-mode', 'bogus'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    p.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    p.on('exit', (code) => resolve({ code, err }));
  });
  assert.notEqual(res.code, 0);
  assert.match(res.err, /proxy-mode/);
  assert.match(res.err, /bogus/);
});
