// `npm run bench:dataplane`: what carrying traffic costs in each data-plane mode (userspace,
// nftables, iptables), measured in one run on the e2e tests' topology (test/support/e2e-cluster.ts):
// the proxy runs in node1's namespace against the fake API server; one Service (ClusterIP
// 10.96.0.50) has one endpoint, pod b-1 on node2, so every packet crosses node1 where the proxy's
// rules (or, in userspace mode, its process) sit; the client is pod c-1 on node1.
// Per mode: p50/p99 of 1,000 short connections (connect, one small request, its answer, close);
// throughput of one stream of 512 MiB and of 8 parallel streams of 128 MiB; the proxy's CPU time
// (utime+stime from /proc/<pid>/stat) over both throughput runs, per GB carried; then 5 new
// Services, one after another, each timed from its creation in the API to the first answered
// connection to it (polled every 5 ms) - in userspace mode while 1,000 connections are held open
// through the proxy, which must keep answering on all of them.
// Prints a markdown table and the raw figures as JSON; never fails on a figure. Needs root.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { E2ECluster, type ProxyMode } from '../../test/support/e2e-cluster.js';
import type { EndpointSlice } from '../../src/model/k8s.js';

const CLIENT = fileURLToPath(new URL('./client.js', import.meta.url));
const ENDPOINT = fileURLToPath(new URL('./endpoint.js', import.meta.url));
const MODES: ProxyMode[] = ['userspace', 'nftables', 'iptables'];
const VIP = '10.96.0.50';
const PING = 9000;
const SINK = 9001;
const CONNECTS = 1000;
const HELD = 1000;
const NEW_SERVICES = 5;
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());

interface Figures {
  mode: ProxyMode;
  latency: { n: number; errors: number; p50ms: number; p99ms: number };
  one: { mbPerS: number; bytes: number };
  eight: { mbPerS: number; bytes: number };
  cpuSecondsPerGB: number;
  /** New Services, one after another: API create → first answered connection. */
  newServiceMs: number[];
  held?: { held: number; errors: number; stillAnswering: number };
}

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

async function client(c: E2ECluster, args: string[]): Promise<Record<string, unknown>> {
  const r = await c.topo.exec('c-1', process.execPath, [CLIENT, ...args], { timeoutMs: 120000 });
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

function slice(service: string): EndpointSlice {
  const pod = { ip: '10.244.2.10', name: 'b-1' };
  return {
    metadata: { name: `${service}-ipv4`, namespace: 'default', labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    ports: [{ name: 'ping', port: PING, protocol: 'TCP' }],
    endpoints: [
      {
        addresses: [pod.ip],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: 'node-2',
        targetRef: { kind: 'Pod', name: pod.name, namespace: 'default' },
      },
    ],
  };
}

/** A new Service, its endpoints written first: its creation in the API → its first answered connection. */
async function newService(c: E2ECluster, n: number): Promise<number> {
  const name = `late-${n}`;
  const vip = `10.96.1.${n}`;
  await c.create('EndpointSlice', slice(name));
  const poller = c.topo.spawn('c-1', process.execPath, [CLIENT, 'first', vip, String(PING)]);
  await poller.waitFor('polling', { stream: 'stdout', timeoutMs: 10000 });
  const created = Date.now();
  await c.addService({ name, clusterIPs: [vip], ports: [{ name: 'ping', port: PING }] }, { expectRules: false });
  const answered = JSON.parse(await poller.waitFor(/^\{"answeredAt"/, { stream: 'stdout', timeoutMs: 30000 })) as { answeredAt: number };
  await poller.exited;
  return answered.answeredAt - created;
}

/** Times new Services; in userspace mode while connections are held open through the proxy. */
async function syncsUnderLoad(c: E2ECluster, hold: boolean): Promise<Pick<Figures, 'newServiceMs' | 'held'>> {
  const holder = hold ? c.topo.spawn('c-1', process.execPath, [CLIENT, 'hold', VIP, String(PING), String(HELD)]) : undefined;
  await holder?.waitFor(/^\{"held"/, { stream: 'stdout', timeoutMs: 60000 });
  const newServiceMs: number[] = [];
  for (let n = 1; n <= NEW_SERVICES; n++) newServiceMs.push(await newService(c, n));
  if (!holder) return { newServiceMs };
  holder.child.stdin!.end();
  await holder.exited;
  return { newServiceMs, held: JSON.parse(holder.stdout().trim().split('\n').pop()!) as NonNullable<Figures['held']> };
}

async function measure(mode: ProxyMode): Promise<Figures> {
  const c = await E2ECluster.start({
    mode,
    pods: [
      { name: 'b-1', node: 2, ip: '10.244.2.10', tcp: [80], udp: [] },
      { name: 'c-1', node: 1, ip: '10.244.1.20', tcp: [80], udp: [] },
    ],
  });
  try {
    const server = c.topo.spawn('b-1', process.execPath, [ENDPOINT, '--ping', String(PING), '--sink', String(SINK)]);
    await server.waitFor('ready', { stream: 'stdout', timeoutMs: 10000 });
    await c.addService({
      name: 'bench',
      clusterIPs: [VIP],
      ports: [
        { name: 'ping', port: PING },
        { name: 'sink', port: SINK },
      ],
    });
    await c.setEndpoints('bench', ['b-1']);
    const latency = (await client(c, ['latency', VIP, String(PING), String(CONNECTS)])) as unknown as Figures['latency'];
    const pid = c.proxy.pid;
    const cpuBefore = cpuSeconds(pid);
    const one = (await client(c, ['stream', VIP, String(SINK), '1', '512'])) as unknown as Figures['one'];
    const eight = (await client(c, ['stream', VIP, String(SINK), '8', '128'])) as unknown as Figures['eight'];
    const cpu = cpuSeconds(pid) - cpuBefore;
    const cpuSecondsPerGB = cpu / ((one.bytes + eight.bytes) / 1e9);
    return { mode, latency, one, eight, cpuSecondsPerGB, ...(await syncsUnderLoad(c, mode === 'userspace')) };
  } finally {
    await c.destroy();
  }
}

const fmt = (n: number, digits = 2): string => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a');

function table(all: Figures[]): string {
  const rows = [
    '| mode | p50 (ms) | p99 (ms) | 1 stream (MB/s) | 8 streams (MB/s) | proxy CPU per GB (s) | new Service answers (ms) |',
    '|---|---|---|---|---|---|---|',
    ...all.map(
      (f) =>
        `| ${f.mode} | ${fmt(f.latency.p50ms)} | ${fmt(f.latency.p99ms)} | ${fmt(f.one.mbPerS, 0)} | ${fmt(f.eight.mbPerS, 0)} | ${fmt(f.cpuSecondsPerGB, 3)} | ${f.newServiceMs.join(', ')} |`,
    ),
  ];
  for (const f of all) {
    if (f.latency.errors > 0) rows.push(`\n${f.mode}: ${f.latency.errors} of ${f.latency.n} short connections failed`);
    if (f.held) {
      rows.push(
        `\n${f.mode}: ${f.held.held} of ${HELD} connections held open (${f.held.errors} errors), ` +
          `${f.held.stillAnswering} of them still answering after ${NEW_SERVICES} new Services were added meanwhile`,
      );
    }
  }
  return rows.join('\n');
}

const all: Figures[] = [];
for (const mode of MODES) {
  process.stderr.write(`measuring ${mode} mode...\n`);
  all.push(await measure(mode));
}
process.stdout.write(`${table(all)}\n\n${JSON.stringify(all)}\n`);
