import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { VERSION, helpText, parseCommandLine } from '../../src/cli/flags.js';
import { defaultConfiguration, serializeConfiguration } from '../../src/config/index.js';
import { throwsConfigError } from '../support/config-errors.js';
import { CONFIG_HEADER, tempFiles } from '../support/tempfiles.js';

const { dir, write: writeTemp } = tempFiles('kpts-flags-');
const HEADER = CONFIG_HEADER;
// An empty environment, so a developer's $KUBECONFIG cannot change results.
const ENV = {};
const parse = (...argv: string[]) => parseCommandLine(argv, ENV);


describe('parseCommandLine', () => {
  it('gives upstream defaults and empty options without flags', () => {
    const cl = parse();
    assert.deepEqual(cl.config, defaultConfiguration());
    assert.deepEqual(
      { ...cl, config: undefined },
      {
        config: undefined, configFile: '', master: '', manifestsDir: '', cleanup: false, dryRun: false, watch: false, initOnly: false,
        vmodule: '', given: new Set(), writeConfigTo: '', version: false, help: false, verbosity: 0,
      },
    );
  });

  it('accepts --flag value and --flag=value', () => {
    assert.equal(parse('--proxy-mode', 'nftables').config.mode, 'nftables');
    assert.equal(parse('--proxy-mode=ipvs').config.mode, 'ipvs');
    assert.equal(parse('--oom-score-adj', '-500').config.oomScoreAdj, -500);
    assert.equal(parse('--hostname-override=node=a').config.hostnameOverride, 'node=a');
    assert.equal(parse('--proxy-mode=').config.mode, '');
  });

  it('parses many flags together', () => {
    const cl = parse(
      '--master', 'https://10.0.0.1:6443', '--kubeconfig=/etc/kp.conf', '--hostname-override', 'node-a',
      '--cluster-cidr=10.244.0.0/16,fd00:10:244::/56', '--nodeport-addresses', '10.0.0.0/8,fd00::/64',
      '--detect-local-mode', 'InterfaceNamePrefix', '--pod-interface-name-prefix=veth', '--metrics-bind-address', '0.0.0.0:9999',
      '--ipvs-scheduler', 'wrr', '--ipvs-sync-period', '1m', '--ipvs-min-sync-period=5s',
      '--conntrack-max-per-core', '0', '--conntrack-min=1000', '--conntrack-tcp-timeout-established', '2h',
      '--conntrack-tcp-timeout-close-wait=30m', '--config-sync-period', '5m', '--manifests', '/srv/manifests',
      '--dry-run', '--cleanup=true', '--write-config-to', '/tmp/out.yaml', '--feature-gates', 'ContextualLogging=true,TopologyAwareHints=false',
      '--pod-bridge-interface', 'cbr0',
    );
    const c = cl.config;
    assert.equal(cl.master, 'https://10.0.0.1:6443');
    assert.equal(c.clientConnection.kubeconfig, '/etc/kp.conf');
    assert.equal(c.hostnameOverride, 'node-a');
    assert.equal(c.clusterCIDR, '10.244.0.0/16,fd00:10:244::/56');
    assert.deepEqual(c.nodePortAddresses, ['10.0.0.0/8', 'fd00::/64']);
    assert.equal(c.detectLocalMode, 'InterfaceNamePrefix');
    assert.equal(c.detectLocal.interfaceNamePrefix, 'veth');
    assert.equal(c.detectLocal.bridgeInterface, 'cbr0');
    assert.equal(c.metricsBindAddress, '0.0.0.0:9999');
    assert.deepEqual([c.ipvs.scheduler, c.ipvs.syncPeriod, c.ipvs.minSyncPeriod], ['wrr', '1m0s', '5s']);
    assert.deepEqual([c.conntrack.maxPerCore, c.conntrack.min], [0, 1000]);
    assert.deepEqual([c.conntrack.tcpEstablishedTimeout, c.conntrack.tcpCloseWaitTimeout], ['2h0m0s', '30m0s']);
    assert.equal(c.configSyncPeriod, '5m0s');
    assert.deepEqual(c.featureGates, { ContextualLogging: true, TopologyAwareHints: false });
    assert.deepEqual(
      [cl.manifestsDir, cl.dryRun, cl.cleanup, cl.writeConfigTo],
      ['/srv/manifests', true, true, '/tmp/out.yaml'],
    );
  });

  it('treats booleans as switches that also take =false', () => {
    assert.equal(parse('--masquerade-all').config.iptables.masqueradeAll, true);
    assert.equal(parse('--masquerade-all=false').config.iptables.masqueradeAll, false);
    assert.equal(parse('--masquerade-all=1').config.nftables.masqueradeAll, true);
    assert.equal(parse('--cleanup').cleanup, true);
    assert.equal(parse('--cleanup=False').cleanup, false);
    // As in pflag, a separate word after a boolean is a positional argument, not its value.
    throwsConfigError(() => parse('--cleanup', 'false'), '"false"');
  });

  it('maps the iptables sync and masquerade flags onto nftables too', () => {
    const c = parse('--iptables-sync-period=45s', '--iptables-min-sync-period', '2s', '--iptables-masquerade-bit', '12', '--masquerade-all').config;
    assert.deepEqual(
      [c.iptables.syncPeriod, c.iptables.minSyncPeriod, c.iptables.masqueradeBit, c.iptables.masqueradeAll],
      ['45s', '2s', 12, true],
    );
    assert.deepEqual(
      [c.nftables.syncPeriod, c.nftables.minSyncPeriod, c.nftables.masqueradeBit, c.nftables.masqueradeAll],
      ['45s', '2s', 12, true],
    );
  });

  it('keeps an explicit zero given on the command line', () => {
    const c = parse('--iptables-min-sync-period=0s', '--iptables-masquerade-bit=0', '--healthz-bind-address=').config;
    assert.equal(c.iptables.minSyncPeriod, '0s');
    assert.equal(c.nftables.minSyncPeriod, '0s');
    assert.equal(c.iptables.masqueradeBit, 0);
    assert.equal(c.healthzBindAddress, '');
  });

  it('adds default ports to listen addresses and follows an IPv6 bind address', () => {
    const c = parse('--healthz-bind-address', '127.0.0.1', '--metrics-bind-address=::').config;
    assert.equal(c.healthzBindAddress, '127.0.0.1:10256');
    assert.equal(c.metricsBindAddress, '[::]:10249');
    const v6 = parse('--bind-address', '::').config;
    assert.equal(v6.bindAddress, '::');
    assert.equal(v6.healthzBindAddress, '[::]:10256');
    assert.equal(v6.metricsBindAddress, '[::1]:10249');
  });

  it('appends repeated list flags and merges repeated feature gates', () => {
    const c = parse('--nodeport-addresses=10.0.0.0/8', '--nodeport-addresses', '192.168.0.0/16', '--feature-gates=ContextualLogging=true,TopologyAwareHints=true', '--feature-gates', 'TopologyAwareHints=false').config;
    assert.deepEqual(c.nodePortAddresses, ['10.0.0.0/8', '192.168.0.0/16']);
    assert.deepEqual(c.featureGates, { ContextualLogging: true, TopologyAwareHints: false });
    assert.deepEqual(parse('--nodeport-addresses', 'primary').config.nodePortAddresses, ['primary']);
  });

  it('reads verbosity from --v, -v, or the config file', () => {
    assert.equal(parse('--v', '3').verbosity, 3);
    assert.equal(parse('--v=4').verbosity, 4);
    assert.equal(parse('-v', '5').verbosity, 5);
    assert.equal(parse('-v=6').verbosity, 6);
    assert.equal(parse('-v2').verbosity, 2);
    assert.equal(parse('--v=4').config.logging.verbosity, 4);
    const path = writeTemp(`${HEADER}logging:\n  verbosity: 2\n`);
    assert.equal(parse('--config', path).verbosity, 2);
    assert.equal(parse('--config', path, '--v=7').verbosity, 7);
  });

  it('uses $KUBECONFIG only when neither a kubeconfig nor --master is given', () => {
    const env = { KUBECONFIG: '/home/me/.kube/config:/other' };
    assert.equal(parseCommandLine([], env).config.clientConnection.kubeconfig, '/home/me/.kube/config');
    assert.equal(parseCommandLine(['--kubeconfig', '/x'], env).config.clientConnection.kubeconfig, '/x');
    assert.equal(parseCommandLine(['--master', 'http://127.0.0.1:8080'], env).config.clientConnection.kubeconfig, '');
    assert.equal(parseCommandLine([], {}).config.clientConnection.kubeconfig, '');
  });
});

describe('config file and flags together', () => {
  const fileText = `${HEADER}mode: ipvs
clusterCIDR: 10.244.0.0/16
oomScoreAdj: -500
clientConnection:
  kubeconfig: /from/file
iptables:
  syncPeriod: 10s
  masqueradeAll: true
ipvs:
  scheduler: lc
featureGates:
  WatchListClient: true
  TopologyAwareHints: true
`;

  it('uses the file, with defaults for what it leaves out', () => {
    const c = parse('--config', writeTemp(fileText)).config;
    assert.equal(c.mode, 'ipvs');
    assert.equal(c.clusterCIDR, '10.244.0.0/16');
    assert.equal(c.oomScoreAdj, -500);
    assert.equal(c.iptables.syncPeriod, '10s');
    assert.equal(c.iptables.minSyncPeriod, '1s');
    assert.equal(c.clientConnection.kubeconfig, '/from/file');
  });

  it('lets only explicitly given flags override the file', () => {
    const path = writeTemp(fileText);
    const c = parse('--proxy-mode', 'nftables', '--config', path, '--kubeconfig=/from/flag', '--feature-gates', 'TopologyAwareHints=false,ContextualLogging=true').config;
    assert.equal(c.mode, 'nftables');
    assert.equal(c.clientConnection.kubeconfig, '/from/flag');
    assert.deepEqual(c.featureGates, { WatchListClient: true, TopologyAwareHints: false, ContextualLogging: true });
    // Not given on the command line: the file wins over the flag defaults.
    assert.equal(c.oomScoreAdj, -500);
    assert.equal(c.iptables.syncPeriod, '10s');
    assert.equal(c.iptables.masqueradeAll, true);
    assert.equal(c.ipvs.scheduler, 'lc');
    assert.equal(parse('--config', path, '--masquerade-all=false').config.iptables.masqueradeAll, false);
  });

  it('reads JSON config files', () => {
    const path = writeTemp(JSON.stringify({
      apiVersion: 'kubeproxy.config.k8s.io/v1alpha1', kind: 'KubeProxyConfiguration',
      mode: 'nftables', nftables: { syncPeriod: '20s' }, nodePortAddresses: ['primary'],
    }), 'json');
    const c = parse('--config', path).config;
    assert.equal(c.mode, 'nftables');
    assert.equal(c.nftables.syncPeriod, '20s');
    assert.deepEqual(c.nodePortAddresses, ['primary']);
  });

  it('lets a flag fix a value the file gets wrong', () => {
    const path = writeTemp(`${HEADER}mode: turbo\n`);
    throwsConfigError(() => parse('--config', path), path, 'mode', '"turbo"');
    assert.equal(parse('--config', path, '--proxy-mode', 'iptables').config.mode, 'iptables');
  });

  it('reports file errors naming the file and the field', () => {
    const path = writeTemp(`${HEADER}iptables:\n  syncPeriodd: 30s\n`);
    throwsConfigError(() => parse('--config', path), path, 'iptables.syncPeriodd');
    const missing = join(dir, 'nope.yaml');
    throwsConfigError(() => parse('--config', missing), missing);
    const bad = writeTemp(`${HEADER}iptables:\n  minSyncPeriod: 1m\n`);
    throwsConfigError(() => parse('--config', bad), bad, 'iptables.minSyncPeriod', '"1m0s"');
  });
});

describe('command-line errors', () => {
  const cases: [string, string[], string[]][] = [
    ['unknown flag', ['--proxy-mod', 'iptables'], ['unknown flag', '--proxy-mod']],
    ['unknown shorthand', ['-x'], ['-x']],
    ['missing value at the end', ['--master'], ['--master', 'needs an argument']],
    ['missing value before another flag', ['--kubeconfig', '--cleanup'], ['--kubeconfig', 'needs an argument']],
    ['non-integer', ['--iptables-masquerade-bit', 'abc'], ['--iptables-masquerade-bit', '"abc"']],
    ['integer out of int32', ['--conntrack-min=99999999999'], ['--conntrack-min', '"99999999999"']],
    ['bad duration', ['--iptables-sync-period', '5x'], ['--iptables-sync-period', '"5x"']],
    ['bad boolean', ['--masquerade-all=maybe'], ['--masquerade-all', '"maybe"']],
    ['bad feature gate pair', ['--feature-gates', 'A'], ['--feature-gates', '"A"']],
    ['bad feature gate value', ['--feature-gates=A=yes'], ['--feature-gates', 'yes']],
    ['bad float', ['--kube-api-qps', 'fast'], ['--kube-api-qps', '"fast"']],
    ['unknown proxy mode', ['--proxy-mode', 'turbo'], ['--proxy-mode', '"turbo"']],
    ['masquerade bit out of range', ['--iptables-masquerade-bit', '40'], ['--iptables-masquerade-bit', '40', '[0, 31]']],
    ['primary mixed with CIDRs', ['--nodeport-addresses', '10.0.0.0/8,primary'], ['--nodeport-addresses', '"primary"']],
    ['bad node port CIDR', ['--nodeport-addresses=10.0.0.0/8,10.1.1.1'], ['--nodeport-addresses', '"10.1.1.1"']],
    ['bad cluster CIDR', ['--cluster-cidr', '10.244.0.0/40'], ['--cluster-cidr', '10.244.0.0/40']],
    ['bad detect-local mode', ['--detect-local-mode=Magic'], ['--detect-local-mode', '"Magic"']],
    ['bridge mode without bridge', ['--detect-local-mode=BridgeInterface'], ['detectLocal.bridgeInterface', '--detect-local-mode="BridgeInterface"']],
    ['sync period below the min sync period', ['--iptables-sync-period', '500ms'], ['iptables.minSyncPeriod', '"1s"', '--iptables-sync-period="500ms"']],
    ['min sync period above the sync period', ['--iptables-min-sync-period', '1h'], ['--iptables-min-sync-period', '"1h0m0s"', 'iptables.syncPeriod']],
    ['bad healthz address', ['--healthz-bind-address', 'localhost:1'], ['--healthz-bind-address', 'localhost:1']],
    ['bad bind address', ['--bind-address=1.2.3'], ['--bind-address', '"1.2.3"']],
    ['zero sync period', ['--iptables-sync-period=0s'], ['--iptables-sync-period', '"0s"']],
    ['unknown ipvs scheduler', ['--proxy-mode=ipvs', '--ipvs-scheduler', 'best'], ['--ipvs-scheduler', '"best"']],
    ['negative conntrack', ['--conntrack-max-per-core=-1'], ['--conntrack-max-per-core', '-1']],
    ['oom score out of range', ['--oom-score-adj', '2000'], ['--oom-score-adj', '2000']],
    ['positional argument', ['--cleanup', 'extra'], ['"extra"', 'positional']],
    ['positional after --', ['--', '--cleanup'], ['"--cleanup"']],
  ];
  for (const [name, argv, needles] of cases) {
    it(`rejects ${name}`, () => {
      throwsConfigError(() => parse(...argv), ...needles);
    });
  }
});

describe('help, version and --write-config-to', () => {
  it('skips the config file for --help and --version', () => {
    const missing = join(dir, 'absent.yaml');
    const h = parse('--help', '--config', missing);
    assert.equal(h.help, true);
    assert.deepEqual(h.config, defaultConfiguration());
    assert.equal(parse('-h').help, true);
    assert.equal(parse('--version', '--config', missing).version, true);
  });

  it('reports the package version', () => {
    const pkgPath = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'package.json');
    const pkg = JSON.parse(readFileSync(pkgPath, 'utf8')) as { version: string };
    assert.equal(VERSION, pkg.version);
    assert.match(VERSION, /^\d+\.\d+\.\d+/);
  });

  it('lists every flag with its default in the help text', () => {
    const text = helpText();
    const flags = [
      'config', 'kubeconfig', 'master', 'proxy-mode', 'hostname-override', 'cluster-cidr', 'masquerade-all',
      'nodeport-addresses', 'detect-local-mode', 'pod-bridge-interface', 'pod-interface-name-prefix',
      'healthz-bind-address', 'metrics-bind-address', 'bind-address', 'iptables-sync-period',
      'iptables-min-sync-period', 'iptables-masquerade-bit', 'ipvs-scheduler', 'ipvs-sync-period',
      'ipvs-min-sync-period', 'conntrack-max-per-core', 'conntrack-min', 'conntrack-tcp-timeout-established',
      'conntrack-tcp-timeout-close-wait', 'config-sync-period', 'oom-score-adj', 'cleanup', 'write-config-to',
      'feature-gates', 'v', 'version', 'help', 'manifests', 'dry-run',
    ];
    const lines = text.split('\n');
    for (const f of flags) {
      const line = lines.find((l) => new RegExp(`--${f}( |$)`).test(l));
      assert.ok(line, `help lacks --${f}`);
      // Every flag line carries a description after the name.
      assert.match(line, new RegExp(`--${f}(\\s\\S+)?\\s{2,}\\S`));
    }
    const def = (flag: string) => lines.find((l) => l.includes(`--${flag} `)) ?? '';
    assert.match(def('iptables-sync-period'), /\(default 30s\)/);
    assert.match(def('healthz-bind-address'), /\(default 0\.0\.0\.0:10256\)/);
    assert.match(def('metrics-bind-address'), /\(default 127\.0\.0\.1:10249\)/);
    assert.match(def('oom-score-adj'), /\(default -999\)/);
    assert.match(def('conntrack-tcp-timeout-established'), /\(default 24h0m0s\)/);
    assert.match(def('config-sync-period'), /\(default 15m0s\)/);
  });

  it('writes a configuration that loads back identically', () => {
    const cl = parse(
      '--proxy-mode=nftables', '--cluster-cidr', '10.244.0.0/16', '--iptables-sync-period', '90s',
      '--nodeport-addresses', 'primary', '--feature-gates', 'ContextualLogging=true', '--metrics-bind-address', '0.0.0.0',
      '--conntrack-max-per-core', '0', '--hostname-override', 'node-1', '--v', '3',
      '--kubeconfig', '/etc/kubernetes/kube-proxy.conf', '--write-config-to', join(dir, 'out.yaml'),
    );
    writeFileSync(cl.writeConfigTo, serializeConfiguration(cl.config));
    const reloaded = parse('--config', cl.writeConfigTo);
    assert.deepEqual(reloaded.config, cl.config);
    assert.equal(reloaded.verbosity, 3);
    assert.match(readFileSync(cl.writeConfigTo, 'utf8'), /syncPeriod: 1m30s/);
  });
});
