/*
 * Runs a shell command inside a User-Mode Linux kernel (Debian's `user-mode-linux`: Linux 6.1 as
 * an ordinary process), for kernel features this machine's kernel lacks, such as IPVS. The guest
 * sees the host's filesystem as its root (hostfs), so it runs this checkout's build and the host's
 * tools, but it has its own network stack: nothing it does touches the host's network.
 *
 * Boot sequence: a generated init script mounts proc, sys and a tmpfs on /run (so `ip netns`
 * keeps its namespaces in the guest), loads the modules below, runs the command with its output
 * in a file, writes the exit status to another file and powers off. The host reads both files.
 *
 * Measured on a 2-core machine shared with other work (linux.uml 6.1.176, the guest has one CPU):
 * the kernel reaches init in ~3.3 s; loading MODULES with one `modprobe -a` takes under 1 s; a
 * whole run of `true` (boot, modules, power-off) takes 5 s on a quiet machine, 7-8 s at a load
 * average of 8. `node -e 0` takes 0.9-1.5 s in the guest, so every process a guest test starts
 * is expensive: the e2e cluster of test/e2e (five pod servers, the API server, the proxy) took
 * 95 s to come up at a load average of 10.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, mkdirSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const UML_KERNEL = '/usr/bin/linux.uml';
/** The kernel's modules, as the user-mode-linux package installs them (`<dir>/<release>/kernel/...`). */
export const UML_MODULES = '/usr/lib/uml/modules';

/**
 * Loaded at boot, so commands find what the proxy's modes and the test topology use: IPVS with
 * every scheduler, ipset's types, x_tables (legacy iptables: the guest's nf_tables has no ip/ip6
 * family), conntrack, and the links of the test topology.
 */
export const MODULES = [
  'ipv6',
  'ip_vs',
  ...['rr', 'wrr', 'lc', 'wlc', 'lblc', 'lblcr', 'sh', 'dh', 'sed', 'nq', 'mh', 'fo', 'ovf'].map((s) => `ip_vs_${s}`),
  'ip_set',
  ...['hash_ip', 'hash_ipport', 'hash_ipportip', 'hash_ipportnet', 'hash_net', 'hash_netport', 'bitmap_port'].map((t) => `ip_set_${t}`),
  'nf_conntrack',
  'nf_conntrack_netlink',
  'x_tables',
  'ip_tables',
  'ip6_tables',
  ...['nat', 'filter', 'mangle', 'raw'].flatMap((t) => [`iptable_${t}`, `ip6table_${t}`]),
  'ipt_REJECT',
  'ip6t_REJECT',
  ...['MASQUERADE', 'addrtype', 'comment', 'conntrack', 'mark', 'multiport', 'nat', 'recent', 'set', 'statistic', 'tcpudp', 'physdev'].map((m) => `xt_${m}`),
  // -m ipvs: KUBE-IPVS-OUT-FILTER's match on the virtual server a reply belongs to.
  'xt_ipvs',
  'veth',
  'bridge',
  'br_netfilter',
  'dummy',
];

export interface UmlRun {
  /** The command's exit status (null when the guest never wrote one: see output). */
  exitCode: number | null;
  /** The command's stdout and stderr, interleaved. */
  output: string;
  /** The kernel's console (boot messages, module loading): for diagnostics. */
  console: string;
  /** Wall-clock time of the whole run, boot and power-off included. */
  ms: number;
}

export interface UmlOptions {
  /** Run by /bin/sh in the guest, from `cwd`. */
  command: string;
  /** Kills the kernel after this long (default 120 s). */
  timeoutMs?: number;
  /** Guest memory (default 1536 MB). */
  memMb?: number;
  /** Working directory of the command (default: the host's current one). */
  cwd?: string;
  /** Extra environment variables for the command. */
  env?: Record<string, string>;
}

/** Why UML cannot run here, or null when it can. */
export function umlMissing(): string | null {
  if (!existsSync(UML_KERNEL)) return `${UML_KERNEL} is missing: install the user-mode-linux package (bash scripts/setup.sh does)`;
  if (!existsSync(UML_MODULES)) return `${UML_MODULES} is missing: reinstall the user-mode-linux package`;
  return null;
}

const shq = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

function initScript(dir: string, opts: UmlOptions): string {
  const env = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: '/root',
    // Under the run's directory, so whatever the command leaves there goes with it.
    TMPDIR: join(dir, 'tmp'),
    ...opts.env,
  };
  return [
    '#!/bin/sh',
    'mount -t proc proc /proc',
    'mount -t sysfs sys /sys',
    // The host's /run would otherwise be shared through hostfs: ip netns and the xtables lock live there.
    'mount -t tmpfs tmpfs /run',
    ...Object.entries(env).map(([k, v]) => `export ${k}=${shq(v)}`),
    `modprobe -a -d ${shq(join(dir, 'modules'))} ${MODULES.join(' ')} > ${shq(join(dir, 'modprobe.txt'))} 2>&1`,
    `cd ${shq(opts.cwd ?? process.cwd())}`,
    `/bin/sh -c ${shq(opts.command)} > ${shq(join(dir, 'output.txt'))} 2>&1 < /dev/null`,
    `echo $? > ${shq(join(dir, 'status.txt'))}`,
    'sync',
    'poweroff -f',
    '',
  ].join('\n');
}

/** Boots UML, runs the command in it and powers off; never throws for the command's failure. */
export async function runInUml(opts: UmlOptions): Promise<UmlRun> {
  const missing = umlMissing();
  if (missing) throw new Error(missing);
  const started = Date.now();
  const dir = mkdtempSync(join(tmpdir(), 'kpt-uml-'));
  try {
    // modprobe -d DIR looks in DIR/lib/modules/<release>.
    mkdirSync(join(dir, 'modules', 'lib'), { recursive: true });
    symlinkSync(UML_MODULES, join(dir, 'modules', 'lib', 'modules'));
    mkdirSync(join(dir, 'tmp'));
    const init = join(dir, 'init.sh');
    writeFileSync(init, initScript(dir, opts));
    chmodSync(init, 0o755);

    const args = [`mem=${opts.memMb ?? 1536}M`, 'root=/dev/root', 'rootfstype=hostfs', 'rootflags=/', 'rw', `init=${init}`, 'con=null', 'con0=null,fd:1'];
    // Its own process group: the kernel runs guest processes as host child processes, and a
    // timeout must end them all with it.
    const child = spawn(UML_KERNEL, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: { ...process.env, TMPDIR: dir } });
    let consoleText = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (consoleText += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (consoleText += d));
    const timeoutMs = opts.timeoutMs ?? 120_000;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid);
    }, timeoutMs);
    await new Promise<void>((resolve) => child.once('close', () => resolve()));
    clearTimeout(timer);
    // Guest helper processes outlive a crashed kernel otherwise.
    killGroup(child.pid);

    const read = (name: string): string | undefined => {
      try {
        return readFileSync(join(dir, name), 'utf8');
      } catch {
        return undefined;
      }
    };
    const status = read('status.txt')?.trim();
    let output = read('output.txt') ?? '';
    const modprobe = read('modprobe.txt')?.trim();
    if (modprobe) output = `modprobe: ${modprobe}\n${output}`;
    if (timedOut) output += `\n(killed: the UML run took longer than ${timeoutMs} ms)`;
    return { exitCode: status === undefined || status === '' ? null : Number(status), output, console: consoleText, ms: Date.now() - started };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}
