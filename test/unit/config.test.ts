import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import {
  applyDefaults,
  defaultConfiguration,
  formatDuration,
  loadConfigFile,
  parseConfigText,
  parseDuration,
  resolveBackendConfigs,
  serializeConfiguration,
  syncPeriodsMs,
  validateConfiguration,
  type KubeProxyConfiguration,
} from '../../src/config/index.js';
import { throwsConfigError } from '../support/config-errors.js';
import { CONFIG_HEADER, tempFiles } from '../support/tempfiles.js';

const { dir, write: writeTemp } = tempFiles('kpts-config-');
const HEADER = CONFIG_HEADER;


function withChanges(change: (c: KubeProxyConfiguration) => void): KubeProxyConfiguration {
  const c = defaultConfiguration();
  change(c);
  return c;
}

describe('Go durations', () => {
  it('parses Go duration strings to milliseconds', () => {
    const cases: [string, number][] = [
      ['30s', 30000], ['1m0s', 60000], ['1h30m', 5400000], ['500ms', 500], ['0s', 0], ['0', 0],
      ['1.5s', 1500], ['.5s', 500], ['24h0m0s', 86400000], ['-5s', -5000], ['1500us', 1.5], ['1500µs', 1.5],
      ['2h22m', 8520000], ['1h2m3.25s', 3723250], ['100ns', 0.0001],
    ];
    for (const [text, ms] of cases) assert.equal(parseDuration(text), ms, text);
  });

  it('rejects malformed durations with the bad string in the message', () => {
    for (const bad of ['', '30', '1x', 's', '1 s', '--1s', '1h-2m', 'abc', '.s', '5m30']) {
      throwsConfigError(() => parseDuration(bad), JSON.stringify(bad));
    }
  });

  it('formats milliseconds as Go does', () => {
    const cases: [number, string][] = [
      [30000, '30s'], [60000, '1m0s'], [900000, '15m0s'], [86400000, '24h0m0s'], [3600000, '1h0m0s'],
      [0, '0s'], [500, '500ms'], [1500, '1.5s'], [1.5, '1.5ms'], [0.5, '500µs'], [-5000, '-5s'],
      [5400000, '1h30m0s'], [90061001, '25h1m1.001s'],
    ];
    for (const [ms, text] of cases) assert.equal(formatDuration(ms), text, String(ms));
  });

  it('round-trips through parse and format', () => {
    for (const text of ['30s', '1m0s', '1h30m0s', '500ms', '1.5s', '24h0m0s', '2h22m0s', '1.5ms']) {
      assert.equal(formatDuration(parseDuration(text)), text);
    }
  });
});

const UPSTREAM_DEFAULTS: KubeProxyConfiguration = {
  apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
  kind: 'KubeProxyConfiguration',
  featureGates: {},
  clientConnection: {
    kubeconfig: '',
    acceptContentTypes: '',
    contentType: 'application/vnd.kubernetes.protobuf',
    qps: 5,
    burst: 10,
  },
  logging: { format: 'text', flushFrequency: '5s', verbosity: 0, options: {} },
  hostnameOverride: '',
  bindAddress: '0.0.0.0',
  healthzBindAddress: '0.0.0.0:10256',
  metricsBindAddress: '127.0.0.1:10249',
  bindAddressHardFail: false,
  enableProfiling: false,
  showHiddenMetricsForVersion: '',
  mode: '',
  iptables: { masqueradeBit: 14, masqueradeAll: false, localhostNodePorts: true, syncPeriod: '30s', minSyncPeriod: '1s' },
  ipvs: {
    syncPeriod: '30s', minSyncPeriod: '0s', scheduler: '', excludeCIDRs: null, strictARP: false,
    tcpTimeout: '0s', tcpFinTimeout: '0s', udpTimeout: '0s',
  },
  nftables: { masqueradeBit: 14, masqueradeAll: false, syncPeriod: '30s', minSyncPeriod: '1s' },
  winkernel: {},
  detectLocalMode: '',
  detectLocal: { bridgeInterface: '', interfaceNamePrefix: '' },
  clusterCIDR: '',
  nodePortAddresses: null,
  oomScoreAdj: -999,
  conntrack: {
    maxPerCore: 32768, min: 131072, tcpEstablishedTimeout: '24h0m0s', tcpCloseWaitTimeout: '1h0m0s',
    tcpBeLiberal: false, udpTimeout: '0s', udpStreamTimeout: '0s',
  },
  configSyncPeriod: '15m0s',
  portRange: '',
  udpIdleTimeout: '250ms',
  windowsRunAsService: false,
};

describe('defaults', () => {
  it('match upstream v1alpha1 defaults', () => {
    assert.deepEqual(defaultConfiguration(), UPSTREAM_DEFAULTS);
    assert.doesNotThrow(() => validateConfiguration(defaultConfiguration()));
  });

  it('treat zero values as unset where upstream does, but keep explicit pointer zeros', () => {
    const c = applyDefaults({
      iptables: { syncPeriod: '0s', minSyncPeriod: '0s', masqueradeBit: 0 },
      clientConnection: { qps: 0, burst: 0, contentType: '' },
      healthzBindAddress: '',
      configSyncPeriod: '0s',
      oomScoreAdj: 0,
      conntrack: { maxPerCore: 0, min: null, tcpEstablishedTimeout: '0s' },
    });
    assert.equal(c.iptables.syncPeriod, '30s');
    assert.equal(c.iptables.minSyncPeriod, '1s');
    assert.equal(c.iptables.masqueradeBit, 0);
    assert.equal(c.clientConnection.qps, 5);
    assert.equal(c.clientConnection.burst, 10);
    assert.equal(c.clientConnection.contentType, 'application/vnd.kubernetes.protobuf');
    assert.equal(c.healthzBindAddress, '0.0.0.0:10256');
    assert.equal(c.configSyncPeriod, '15m0s');
    assert.equal(c.oomScoreAdj, 0);
    assert.equal(c.conntrack.maxPerCore, 0);
    assert.equal(c.conntrack.min, 131072);
    assert.equal(c.conntrack.tcpEstablishedTimeout, '0s');
  });

  it('append the default port to bind addresses given without one', () => {
    const c = applyDefaults({ healthzBindAddress: '127.0.0.1', metricsBindAddress: '0.0.0.0' });
    assert.equal(c.healthzBindAddress, '127.0.0.1:10256');
    assert.equal(c.metricsBindAddress, '0.0.0.0:10249');
    const v6 = applyDefaults({ healthzBindAddress: '::1', metricsBindAddress: '[fd00::1]:9999' });
    assert.equal(v6.healthzBindAddress, '[::1]:10256');
    assert.equal(v6.metricsBindAddress, '[fd00::1]:9999');
  });

  it('pick IPv6 listen addresses when bindAddress is IPv6', () => {
    const c = applyDefaults({ bindAddress: '::' });
    assert.equal(c.healthzBindAddress, '[::]:10256');
    assert.equal(c.metricsBindAddress, '[::1]:10249');
  });

  it('normalise durations to Go form', () => {
    const c = applyDefaults({ iptables: { syncPeriod: '60s', minSyncPeriod: '1500ms' }, configSyncPeriod: '90m' });
    assert.equal(c.iptables.syncPeriod, '1m0s');
    assert.equal(c.iptables.minSyncPeriod, '1.5s');
    assert.equal(c.configSyncPeriod, '1h30m0s');
  });

  it('reject a malformed duration naming the field', () => {
    throwsConfigError(() => applyDefaults({ ipvs: { tcpTimeout: '5 minutes' } }), 'ipvs.tcpTimeout', '"5 minutes"');
  });
});

describe('loading config files', () => {
  const yamlText = `${HEADER}mode: nftables
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
nftables:
  syncPeriod: 10s
  minSyncPeriod: 500ms
nodePortAddresses: [primary]
featureGates:
  TopologyAwareHints: true
conntrack:
  maxPerCore: 0
`;

  it('reads YAML and JSON files to the same configuration', () => {
    const fromYaml = loadConfigFile(writeTemp(yamlText));
    const fromJson = loadConfigFile(writeTemp(JSON.stringify(parseYaml(yamlText)), 'json'));
    assert.deepEqual(fromJson, fromYaml);
    assert.equal(fromYaml.mode, 'nftables');
    assert.equal(fromYaml.nftables.syncPeriod, '10s');
    assert.equal(fromYaml.nftables.minSyncPeriod, '500ms');
    assert.deepEqual(fromYaml.nodePortAddresses, ['primary']);
    assert.deepEqual(fromYaml.featureGates, { TopologyAwareHints: true });
    assert.equal(fromYaml.conntrack.maxPerCore, 0);
    // Unset fields get upstream defaults.
    assert.equal(fromYaml.iptables.syncPeriod, '30s');
    assert.equal(fromYaml.healthzBindAddress, '0.0.0.0:10256');
  });

  it('accepts a kubeadm-style file full of nulls and zero values', () => {
    const c = loadConfigFile(writeTemp(`${HEADER}bindAddress: 0.0.0.0
clientConnection:
  acceptContentTypes: ""
  burst: 0
  contentType: ""
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 10.244.0.0/16
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
  tcpBeLiberal: false
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: ""
hostnameOverride: ""
iptables:
  localhostNodePorts: null
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
  verbosity: 0
metricsBindAddress: ""
mode: ""
nftables:
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
nodePortAddresses: null
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  networkName: ""
`));
    assert.equal(c.clientConnection.kubeconfig, '/var/lib/kube-proxy/kubeconfig.conf');
    assert.equal(c.clusterCIDR, '10.244.0.0/16');
    assert.deepEqual(
      { ...c, clientConnection: { ...c.clientConnection, kubeconfig: '' }, clusterCIDR: '', logging: { ...c.logging, options: {} }, winkernel: {} },
      UPSTREAM_DEFAULTS,
    );
  });

  it('accepts logging.flushFrequency as nanoseconds', () => {
    const c = parseConfigText(`${HEADER}logging:\n  flushFrequency: 2000000000\n`);
    assert.equal(applyDefaults(c).logging.flushFrequency, '2s');
  });

  it('reports unknown fields with their full path and the file', () => {
    const path = writeTemp(`${HEADER}iptables:\n  syncPeriodd: 30s\n`);
    const e = throwsConfigError(() => loadConfigFile(path), 'unknown field', 'iptables.syncPeriodd', path);
    assert.equal(e.field, 'iptables.syncPeriodd');
    throwsConfigError(() => parseConfigText(`${HEADER}udpIdleTimout: 250ms\n`), 'unknown field', 'udpIdleTimout');
    throwsConfigError(() => parseConfigText(`${HEADER}detectLocal:\n  bridgeInterfaces: cbr0\n`), 'detectLocal.bridgeInterfaces');
  });

  it('rejects wrong or missing apiVersion and kind', () => {
    throwsConfigError(() => parseConfigText('apiVersion: v1\nkind: KubeProxyConfiguration\n'), 'apiVersion', '"v1"');
    throwsConfigError(() => parseConfigText('kind: KubeProxyConfiguration\n'), 'missing apiVersion');
    throwsConfigError(() => parseConfigText('apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: ConfigMap\n'), 'kind', '"ConfigMap"');
    throwsConfigError(() => parseConfigText('apiVersion: kubeproxy.config.k8s.io/v1alpha1\n'), 'missing kind');
    throwsConfigError(() => parseConfigText(''), 'missing apiVersion');
  });

  it('rejects wrong value types naming the field and the value', () => {
    throwsConfigError(() => parseConfigText(`${HEADER}iptables:\n  masqueradeBit: "14"\n`), 'iptables.masqueradeBit', '"14"');
    throwsConfigError(() => parseConfigText(`${HEADER}iptables:\n  masqueradeBit: 1.5\n`), 'iptables.masqueradeBit', '1.5');
    throwsConfigError(() => parseConfigText(`${HEADER}iptables:\n  syncPeriod: 30\n`), 'iptables.syncPeriod', '30');
    throwsConfigError(() => parseConfigText(`${HEADER}iptables:\n  syncPeriod: 30x\n`), 'iptables.syncPeriod', '"30x"');
    throwsConfigError(() => parseConfigText(`${HEADER}iptables:\n  masqueradeAll: yes\n`), 'iptables.masqueradeAll', '"yes"');
    throwsConfigError(() => parseConfigText(`${HEADER}nodePortAddresses: 10.0.0.0/8\n`), 'nodePortAddresses', '"10.0.0.0/8"');
    throwsConfigError(() => parseConfigText(`${HEADER}nodePortAddresses: [10.0.0.0/8, 5]\n`), 'nodePortAddresses[1]', '5');
    throwsConfigError(() => parseConfigText(`${HEADER}featureGates:\n  Foo: "on"\n`), 'featureGates.Foo', '"on"');
    throwsConfigError(() => parseConfigText(`${HEADER}iptables: fast\n`), 'iptables', '"fast"');
  });

  it('rejects unreadable and malformed files naming the file', () => {
    const missing = join(dir, 'does-not-exist.yaml');
    throwsConfigError(() => loadConfigFile(missing), missing);
    const malformed = writeTemp(`${HEADER}iptables: [\n`);
    throwsConfigError(() => loadConfigFile(malformed), malformed, 'not valid YAML');
    throwsConfigError(() => loadConfigFile(writeTemp('{"apiVersion": ', 'json')), 'not valid YAML or JSON');
    throwsConfigError(() => parseConfigText(`${HEADER}mode: ipvs\nmode: iptables\n`), 'not valid');
    throwsConfigError(() => parseConfigText(`${HEADER}---\n${HEADER}`), '2 documents');
    throwsConfigError(() => parseConfigText('- a\n- b\n'), 'must be a map');
  });

  it('validates the loaded file and names it in the error', () => {
    const path = writeTemp(`${HEADER}mode: turbo\n`);
    throwsConfigError(() => loadConfigFile(path), path, 'mode', '"turbo"');
  });
});

describe('validation', () => {
  const cases: [string, (c: KubeProxyConfiguration) => void, string[]][] = [
    ['bad mode', (c) => { c.mode = 'kernelspace' as never; }, ['mode', '"kernelspace"']],
    ['bad detectLocalMode', (c) => { c.detectLocalMode = 'PodCIDR' as never; }, ['detectLocalMode', '"PodCIDR"']],
    ['BridgeInterface without bridge', (c) => { c.detectLocalMode = 'BridgeInterface'; }, ['detectLocal.bridgeInterface', 'BridgeInterface']],
    ['InterfaceNamePrefix without prefix', (c) => { c.detectLocalMode = 'InterfaceNamePrefix'; }, ['detectLocal.interfaceNamePrefix']],
    ['invalid cluster CIDR', (c) => { c.clusterCIDR = '10.244.0.0/33'; }, ['clusterCIDR', '10.244.0.0/33']],
    ['cluster CIDR not a CIDR', (c) => { c.clusterCIDR = '10.244.0.1'; }, ['clusterCIDR', '10.244.0.1']],
    ['two IPv4 cluster CIDRs', (c) => { c.clusterCIDR = '10.0.0.0/16,10.1.0.0/16'; }, ['clusterCIDR', '10.0.0.0/16,10.1.0.0/16', 'one per IP family']],
    ['three cluster CIDRs', (c) => { c.clusterCIDR = '10.0.0.0/16,fd00::/48,fd01::/48'; }, ['clusterCIDR']],
    ['bad nodePortAddresses entry', (c) => { c.nodePortAddresses = ['10.0.0.0/8', '1.2.3.4']; }, ['nodePortAddresses[1]', '"1.2.3.4"']],
    ['primary mixed with CIDRs', (c) => { c.nodePortAddresses = ['10.0.0.0/8', 'primary']; }, ['nodePortAddresses[1]', '"primary"', "can't use both"]],
    ['primary first then CIDRs', (c) => { c.nodePortAddresses = ['primary', '10.0.0.0/8']; }, ['nodePortAddresses[0]', '"primary"']],
    ['bad bindAddress', (c) => { c.bindAddress = '0.0.0.300'; }, ['bindAddress', '"0.0.0.300"']],
    ['healthz host not an IP', (c) => { c.healthzBindAddress = 'localhost:10256'; }, ['healthzBindAddress', 'localhost:10256']],
    ['healthz port out of range', (c) => { c.healthzBindAddress = '0.0.0.0:70000'; }, ['healthzBindAddress', '0.0.0.0:70000']],
    ['metrics without port', (c) => { c.metricsBindAddress = 'metrics'; }, ['metricsBindAddress', '"metrics"']],
    ['unbracketed IPv6 metrics', (c) => { c.metricsBindAddress = '::1:10249'; }, ['metricsBindAddress', '::1:10249']],
    ['zero syncPeriod', (c) => { c.iptables.syncPeriod = '0s'; }, ['iptables.syncPeriod', '"0s"', 'greater than 0']],
    ['negative minSyncPeriod', (c) => { c.iptables.minSyncPeriod = '-1s'; }, ['iptables.minSyncPeriod', '"-1s"']],
    ['minSyncPeriod above syncPeriod', (c) => { c.iptables.minSyncPeriod = '1m0s'; }, ['iptables.minSyncPeriod', '"1m0s"', 'iptables.syncPeriod']],
    ['nftables minSync above sync', (c) => { c.mode = 'nftables'; c.nftables.syncPeriod = '1s'; c.nftables.minSyncPeriod = '2s'; }, ['nftables.minSyncPeriod', '"2s"']],
    ['malformed duration', (c) => { c.configSyncPeriod = 'soon'; }, ['configSyncPeriod', '"soon"']],
    ['zero configSyncPeriod', (c) => { c.configSyncPeriod = '0s'; }, ['configSyncPeriod', '"0s"']],
    ['masqueradeBit 32', (c) => { c.iptables.masqueradeBit = 32; }, ['iptables.masqueradeBit', '32']],
    ['masqueradeBit -1', (c) => { c.iptables.masqueradeBit = -1; }, ['iptables.masqueradeBit', '-1']],
    ['nftables masqueradeBit', (c) => { c.mode = 'nftables'; c.nftables.masqueradeBit = 40; }, ['nftables.masqueradeBit', '40']],
    ['unknown ipvs scheduler', (c) => { c.mode = 'ipvs'; c.ipvs.scheduler = 'fastest'; }, ['ipvs.scheduler', '"fastest"']],
    ['ipvs syncPeriod zero', (c) => { c.mode = 'ipvs'; c.ipvs.syncPeriod = '0s'; }, ['ipvs.syncPeriod', '"0s"']],
    ['negative ipvs timeout', (c) => { c.mode = 'ipvs'; c.ipvs.tcpTimeout = '-5s'; }, ['ipvs.tcpTimeout', '"-5s"']],
    ['bad ipvs excludeCIDRs', (c) => { c.mode = 'ipvs'; c.ipvs.excludeCIDRs = ['nope']; }, ['ipvs.excludeCIDRs[0]', '"nope"']],
    ['negative conntrack maxPerCore', (c) => { c.conntrack.maxPerCore = -1; }, ['conntrack.maxPerCore', '-1']],
    ['negative conntrack min', (c) => { c.conntrack.min = -5; }, ['conntrack.min', '-5']],
    ['negative conntrack timeout', (c) => { c.conntrack.tcpCloseWaitTimeout = '-1h'; }, ['conntrack.tcpCloseWaitTimeout', '"-1h"']],
    ['oomScoreAdj out of range', (c) => { c.oomScoreAdj = 1001; }, ['oomScoreAdj', '1001']],
    ['negative burst', (c) => { c.clientConnection.burst = -1; }, ['clientConnection.burst', '-1']],
    ['bad port range', (c) => { c.portRange = '2000-1000'; }, ['portRange', '"2000-1000"']],
    ['zero UDP idle timeout', (c) => { c.udpIdleTimeout = '0s'; }, ['udpIdleTimeout', '"0s"']],
    ['localhost NodePorts outside nftables mode', (c) => { c.nodePortAddresses = ['localhost']; }, ['nodePortAddresses[0]', 'KubeProxyNFTablesLocalhostNodePorts']],
    [
      'localhost NodePorts without their feature gate',
      (c) => { c.mode = 'nftables'; c.nodePortAddresses = ['localhost', 'primary']; },
      ['nodePortAddresses[0]', 'needs mode nftables and the feature gate'],
    ],
    ['bad logging format', (c) => { c.logging.format = 'xml'; }, ['logging.format', '"xml"']],
  ];
  for (const [name, change, needles] of cases) {
    it(`rejects ${name}`, () => {
      throwsConfigError(() => validateConfiguration(withChanges(change)), ...needles);
    });
  }

  it('accepts valid non-default settings', () => {
    const ok: ((c: KubeProxyConfiguration) => void)[] = [
      (c) => { c.nodePortAddresses = ['primary']; },
      (c) => { c.nodePortAddresses = ['10.0.0.0/8', 'fd00::/64']; },
      (c) => { c.clusterCIDR = '10.244.0.0/16,fd00:10:244::/56'; },
      (c) => { c.mode = 'ipvs'; c.ipvs.scheduler = 'mh'; c.ipvs.excludeCIDRs = ['192.168.0.0/16']; },
      (c) => { c.detectLocalMode = 'BridgeInterface'; c.detectLocal.bridgeInterface = 'cbr0'; },
      (c) => { c.detectLocalMode = 'InterfaceNamePrefix'; c.detectLocal.interfaceNamePrefix = 'veth'; },
      (c) => { c.mode = 'userspace'; c.portRange = '30000-32767'; c.udpIdleTimeout = '2s'; },
      (c) => { c.mode = 'nftables'; c.featureGates = { KubeProxyNFTablesLocalhostNodePorts: true }; c.nodePortAddresses = ['localhost', 'primary']; },
      (c) => { c.iptables.minSyncPeriod = '0s'; c.healthzBindAddress = ''; c.metricsBindAddress = '[::]:10249'; },
      (c) => { c.iptables.masqueradeBit = 0; c.conntrack.maxPerCore = 0; },
    ];
    for (const change of ok) assert.doesNotThrow(() => validateConfiguration(withChanges(change)));
  });
});

describe('serializeConfiguration', () => {
  const custom = withChanges((c) => {
    c.mode = 'nftables';
    c.clientConnection.kubeconfig = '/etc/kube-proxy/kubeconfig';
    c.clientConnection.qps = 7.5;
    c.featureGates = { ContextualLogging: true, TopologyAwareHints: false };
    c.healthzBindAddress = '[::]:10256';
    c.clusterCIDR = '10.244.0.0/16,fd00:10:244::/56';
    c.nodePortAddresses = ['10.0.0.0/8', 'fd00::/64'];
    c.nftables = { masqueradeBit: 5, masqueradeAll: true, syncPeriod: '1m0s', minSyncPeriod: '2.5s' };
    c.iptables.localhostNodePorts = false;
    c.ipvs.excludeCIDRs = ['192.168.0.0/16'];
    c.ipvs.tcpTimeout = '15m0s';
    c.detectLocalMode = 'NodeCIDR';
    c.oomScoreAdj = 0;
    c.conntrack.maxPerCore = 0;
    c.conntrack.tcpEstablishedTimeout = '0s';
    c.conntrack.udpTimeout = '30s';
    c.configSyncPeriod = '1h30m0s';
    c.portRange = '30000-32767';
    c.hostnameOverride = 'true';
    c.detectLocal.interfaceNamePrefix = '014';
  });

  it('writes every field, with Go durations, and loads back to an identical configuration', () => {
    const text = serializeConfiguration(custom);
    assert.match(text, /syncPeriod: 1m0s/);
    assert.match(text, /configSyncPeriod: 1h30m0s/);
    assert.match(text, /nodePortAddresses:\n\s+- 10\.0\.0\.0\/8/);
    // A string that looks like a YAML boolean stays a string.
    assert.deepEqual(applyDefaults(parseConfigText(text)), custom);
    const path = writeTemp(text);
    assert.deepEqual(loadConfigFile(path), custom);
  });

  it('lists every field of the configuration, even when empty or null', () => {
    const raw = parseYaml(serializeConfiguration(defaultConfiguration())) as Record<string, unknown>;
    const keys = (o: unknown, prefix = ''): string[] =>
      o !== null && typeof o === 'object' && !Array.isArray(o)
        ? Object.entries(o).flatMap(([k, v]) => [`${prefix}${k}`, ...keys(v, `${prefix}${k}.`)])
        : [];
    assert.deepEqual(keys(raw).sort(), keys(defaultConfiguration()).sort());
    assert.equal(raw.nodePortAddresses, null);
    assert.deepEqual(applyDefaults(parseConfigText(serializeConfiguration(defaultConfiguration()))), defaultConfiguration());
  });
});

describe('resolveBackendConfigs', () => {
  const node = { ips: ['fd00::10', '192.168.1.10', '192.168.1.11'], podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'] };

  it('returns one config per node IP family, IPv4 first, with cluster CIDRs by family', () => {
    const c = withChanges((x) => { x.clusterCIDR = '10.244.0.0/16,fd00:10:244::/56'; });
    const [v4, v6, ...rest] = resolveBackendConfigs(c, node);
    assert.equal(rest.length, 0);
    assert.deepEqual(v4, {
      family: 'IPv4', masqueradeAll: false, masqueradeBit: 14, detectLocalMode: 'ClusterCIDR',
      localCIDRs: ['10.244.0.0/16'], bridgeInterface: '', interfaceNamePrefix: '',
      nodePortAddresses: [], nodeIPs: ['192.168.1.10', '192.168.1.11'], localhostNodePorts: true,
      ipvs: { scheduler: '', excludeCIDRs: [], strictARP: false, tcpSec: 0, tcpFinSec: 0, udpSec: 0 },
      userspaceProxy: { udpIdleTimeoutMs: 250, localhostNodePorts: false },
    });
    assert.equal(v6!.family, 'IPv6');
    assert.deepEqual(v6!.localCIDRs, ['fd00:10:244::/56']);
    assert.deepEqual(v6!.nodeIPs, ['fd00::10']);
  });

  it("hands the in-process proxy its port range, UDP idle timeout and localhost NodePorts", () => {
    const c = withChanges((x) => {
      x.mode = 'nftables';
      x.featureGates = { KubeProxyNFTablesLocalhostNodePorts: true };
      x.portRange = '30000+99';
      x.udpIdleTimeout = '2s';
      x.nodePortAddresses = ['localhost', '192.168.1.0/24'];
    });
    const [v4] = resolveBackendConfigs(c, node);
    assert.deepEqual(v4!.userspaceProxy, { portRange: { min: 30000, max: 30099 }, udpIdleTimeoutMs: 2000, localhostNodePorts: true });
    assert.deepEqual(v4!.nodePortAddresses, ['192.168.1.0/24'], 'renderers never see the localhost keyword');
  });

  it('uses node pod CIDRs in NodeCIDR mode and nothing for interface modes', () => {
    const nodeCidr = resolveBackendConfigs(withChanges((x) => { x.detectLocalMode = 'NodeCIDR'; x.clusterCIDR = '10.0.0.0/8'; }), node);
    assert.deepEqual(nodeCidr.map((b) => b.localCIDRs), [['10.244.1.0/24'], ['fd00:10:244:1::/64']]);
    const bridge = resolveBackendConfigs(
      withChanges((x) => { x.detectLocalMode = 'BridgeInterface'; x.detectLocal.bridgeInterface = 'cbr0'; x.clusterCIDR = '10.0.0.0/8'; }),
      { ips: ['192.168.1.10'], podCIDRs: [] },
    );
    assert.equal(bridge.length, 1);
    assert.equal(bridge[0]!.detectLocalMode, 'BridgeInterface');
    assert.equal(bridge[0]!.bridgeInterface, 'cbr0');
    assert.deepEqual(bridge[0]!.localCIDRs, []);
  });

  it('takes masquerade settings from the active mode', () => {
    const set = (mode: KubeProxyConfiguration['mode']) => withChanges((x) => {
      x.mode = mode;
      x.iptables.masqueradeBit = 3; x.iptables.masqueradeAll = false;
      x.nftables.masqueradeBit = 9; x.nftables.masqueradeAll = true;
    });
    const ips = { ips: ['10.0.0.1'], podCIDRs: [] };
    assert.deepEqual(resolveBackendConfigs(set('nftables'), ips).map((b) => [b.masqueradeBit, b.masqueradeAll]), [[9, true]]);
    assert.deepEqual(resolveBackendConfigs(set('iptables'), ips).map((b) => [b.masqueradeBit, b.masqueradeAll]), [[3, false]]);
    assert.deepEqual(resolveBackendConfigs(set(''), ips).map((b) => [b.masqueradeBit, b.masqueradeAll]), [[3, false]]);
    assert.deepEqual(resolveBackendConfigs(set('ipvs'), ips).map((b) => [b.masqueradeBit, b.masqueradeAll]), [[3, false]]);
  });

  it('passes iptables.localhostNodePorts through', () => {
    const off = withChanges((x) => { x.iptables.localhostNodePorts = false; });
    assert.deepEqual(resolveBackendConfigs(off, { ips: ['10.0.0.1'], podCIDRs: [] }).map((b) => b.localhostNodePorts), [false]);
  });

  it('filters nodePortAddresses by family and keeps primary', () => {
    const mixed = resolveBackendConfigs(withChanges((x) => { x.nodePortAddresses = ['10.0.0.0/8', 'fd00::/64', '127.0.0.0/8']; }), node);
    assert.deepEqual(mixed.map((b) => b.nodePortAddresses), [['10.0.0.0/8', '127.0.0.0/8'], ['fd00::/64']]);
    const primary = resolveBackendConfigs(withChanges((x) => { x.nodePortAddresses = ['primary']; }), node);
    assert.deepEqual(primary.map((b) => b.nodePortAddresses), [['primary'], ['primary']]);
  });

  it('falls back to IPv4 when the node has no usable IP', () => {
    const r = resolveBackendConfigs(defaultConfiguration(), { ips: ['not-an-ip'], podCIDRs: [] });
    assert.deepEqual(r.map((b) => [b.family, b.nodeIPs]), [['IPv4', []]]);
  });
});

describe('syncPeriodsMs', () => {
  it('uses the sync periods of the active mode', () => {
    const c = withChanges((x) => {
      x.iptables.syncPeriod = '20s'; x.iptables.minSyncPeriod = '2s';
      x.nftables.syncPeriod = '40s'; x.nftables.minSyncPeriod = '500ms';
      x.ipvs.syncPeriod = '1m0s'; x.ipvs.minSyncPeriod = '0s';
    });
    assert.deepEqual(syncPeriodsMs(c), { syncPeriodMs: 20000, minSyncPeriodMs: 2000 });
    assert.deepEqual(syncPeriodsMs({ ...c, mode: 'nftables' }), { syncPeriodMs: 40000, minSyncPeriodMs: 500 });
    assert.deepEqual(syncPeriodsMs({ ...c, mode: 'ipvs' }), { syncPeriodMs: 60000, minSyncPeriodMs: 0 });
    assert.deepEqual(syncPeriodsMs({ ...c, mode: 'userspace' }), { syncPeriodMs: 20000, minSyncPeriodMs: 2000 });
  });
});
