// `--proxy-mode nftables` end to end: every shared scenario on a real kernel, with NodePorts also
// on localhost (KEP-6032: `localhost` in nodePortAddresses, behind its feature gate), which
// leaves the other NodePort addresses at the mode's default.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { requestMany, tcpRequest, udpRequest } from '../support/netclient.js';
import { COMMAND } from '../support/command.js';
import { modeSuite, sorted } from './scenarios.js';

modeSuite(
  'nftables mode on a real kernel',
  { mode: 'nftables', extraArgs: ['--nodeport-addresses', 'localhost', '--feature-gates', 'KubeProxyNFTablesLocalhostNodePorts=true'] },
  (c) => {
    it('explain --node asks the running proxy, which traces on the state it programmed', async () => {
      const explain = (...args: string[]) =>
        c().topo.exec('node1', process.execPath, [COMMAND, 'explain', '--node', 'http://127.0.0.1:10249', ...args], { check: false });
      const r = await explain('--from', '10.244.1.20', '--to', '10.96.0.10:80');
      assert.equal(r.code, 0, r.stderr);
      for (const pod of ['10.244.1.10', '10.244.1.11', '10.244.2.10', '10.244.2.11']) assert.match(r.stdout, new RegExp(pod.replace(/\./g, '\\.')));
      const bad = await explain('--from', 'nonsense', '--to', '10.96.0.10:80');
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /--from 'nonsense' is not an IP address/);
      const nobody = await c().topo.exec('node1', process.execPath, [COMMAND, 'explain', '--node', 'http://127.0.0.1:1', '--from', '10.244.1.20', '--to', '10.96.0.10:80'], { check: false });
      assert.equal(nobody.code, 1);
      assert.match(nobody.stderr, /cannot reach the proxy at http:\/\/127\.0\.0\.1:1/);
    });

    it('localhost NodePorts: 127.0.0.1 and ::1 reach every endpoint through the in-process proxy', async () => {
      await c().addService({
        name: 'loop',
        type: 'NodePort',
        clusterIPs: ['10.96.0.95', 'fd00:96::95'],
        ports: [
          { name: 'http', port: 80, targetPort: 8080, nodePort: 30095 },
          { name: 'dns', protocol: 'UDP', port: 53, targetPort: 5353, nodePort: 30095 },
        ],
        externalTrafficPolicy: 'Local',
      });
      await c().setEndpoints('loop', ['a-1', 'b-1']);
      // The node's own traffic is not outside traffic: remote endpoints too, despite policy Local.
      assert.deepEqual(sorted((await requestMany(c().topo, 'node1', '127.0.0.1', 30095, 30)).pods), ['a-1', 'b-1']);
      assert.deepEqual(sorted((await requestMany(c().topo, 'node1', '::1', 30095, 30)).pods), ['a-1', 'b-1']);
      assert.equal((await udpRequest(c().topo, 'node1', '127.0.0.1', 30095)).ok, true);
      await c().setEndpoints('loop', []);
      assert.deepEqual(await tcpRequest(c().topo, 'node1', '127.0.0.1', 30095, { timeoutMs: 1000 }), { ok: false, error: 'refused' });
      await c().removeService('loop');
      assert.deepEqual(await tcpRequest(c().topo, 'node1', '127.0.0.1', 30095, { timeoutMs: 1000 }), { ok: false, error: 'refused' });
    });
  },
);
