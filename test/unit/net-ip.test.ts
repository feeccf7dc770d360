import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { BlockList } from 'node:net';
import {
  bitLength,
  cidrContains,
  formatCIDR,
  formatIP,
  ipFromBigInt,
  ipToBigInt,
  isCanonicalIPv4,
  parseCIDR,
  parseIP,
  type CIDR,
  type CIDROptions,
  type IP,
} from '../../src/net/ip.js';

const LENIENT: CIDROptions = { leadingZeros: true, v4Mapped: true };

function text(s: unknown, opts: CIDROptions = {}): string | null {
  const ip = parseIP(s, opts);
  return ip === null ? null : formatIP(ip);
}

function cidrText(s: unknown, opts: CIDROptions = {}): string | null {
  const c = parseCIDR(s, opts);
  return c === null ? null : formatCIDR(c);
}

function ip(s: string): IP {
  const p = parseIP(s, { v4Mapped: true });
  assert.ok(p, `test address ${s}`);
  return p;
}

function cidr(s: string): CIDR {
  const c = parseCIDR(s, { v4Mapped: true });
  assert.ok(c, `test CIDR ${s}`);
  return c;
}

// Small deterministic generator, so a failing case can be reproduced.
function rng(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648;
  };
}

describe('IPv4', () => {
  test('dotted quads are read and written back unchanged', () => {
    for (const s of ['0.0.0.0', '255.255.255.255', '10.1.2.3', '192.168.0.10', '1.0.0.1']) {
      const p = parseIP(s);
      assert.equal(p?.family, 'IPv4', s);
      assert.equal(formatIP(p!), s);
    }
  });

  test('anything but four decimal octets is rejected', () => {
    const bad = ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1.2.3.1000', '1..2.3', '.1.2.3', '1.2.3.4.', ' 1.2.3.4',
      '1.2.3.4 ', '1.2.3.a', '1.2.3.-4', '0x1.2.3.4', '1.2.3.4/32', '1e2.1.1.1', '1.2.3.4%eth0'];
    for (const s of bad) assert.equal(parseIP(s), null, s);
  });

  test('leading zeros are rejected unless asked for, and then read as decimal', () => {
    for (const s of ['01.2.3.4', '1.2.3.04', '00.0.0.0', '010.010.010.010']) assert.equal(parseIP(s), null, s);
    assert.equal(text('010.001.000.1', LENIENT), '10.1.0.1');
    assert.equal(text('000.000.000.000', LENIENT), '0.0.0.0');
    assert.equal(text('0255.1.1.1', LENIENT), null, 'still at most three digits');
    assert.equal(text('256.1.1.1', LENIENT), null);
  });

  test('values that are not strings are rejected', () => {
    for (const v of [undefined, null, 42, {}, ['1.2.3.4'], true]) assert.equal(parseIP(v), null);
  });

  test('a text is taken as canonical exactly when parsing and writing it back gives it unchanged', () => {
    const next = rng(7);
    const pieces = ['0', '1', '9', '00', '01', '10', '99', '100', '199', '200', '249', '250', '255', '256', '299', '300', '999', '0255', '', 'a', '-1', ' 1', '1e1'];
    const samples = ['0.0.0.0', '255.255.255.255', '1.2.3.4', '1.2.3', '1.2.3.4.5', '::1', '::ffff:1.2.3.4', '1.2.3.4/32', '1.2.3.4 ', ''];
    for (let i = 0; i < 20000; i++) {
      const n = 3 + Math.floor(next() * 3);
      samples.push(Array.from({ length: n }, () => pieces[Math.floor(next() * pieces.length)]!).join('.'));
    }
    let canonical = 0;
    for (const s of samples) {
      const p = parseIP(s);
      const roundTrip = p !== null && p.family === 'IPv4' && formatIP(p) === s;
      assert.equal(isCanonicalIPv4(s), roundTrip, s);
      if (roundTrip) canonical++;
    }
    assert.ok(canonical > 300, `${canonical} canonical samples`);
  });
});

describe('IPv6', () => {
  test('canonical text follows RFC 5952', () => {
    const cases: Array<[string, string]> = [
      ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
      ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
      // The first of two equally long zero runs is compressed.
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      // The longer run wins over an earlier one.
      ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],
      // A single zero group is not compressed.
      ['1:0:2:3:4:5:6:7', '1:0:2:3:4:5:6:7'],
      ['::', '::'],
      ['::1', '::1'],
      ['1::', '1::'],
      ['0:0:0:0:0:0:0:0', '::'],
      ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
      ['::2:3:4:5:6:7:8', '0:2:3:4:5:6:7:8'],
      ['fe80:0:0:0:1:0:0:0', 'fe80::1:0:0:0'],
      ['FFFF:ffff:FfFf:ffff:ffff:ffff:ffff:ffff', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
    ];
    for (const [input, want] of cases) {
      assert.equal(parseIP(input)?.family, 'IPv6', input);
      assert.equal(text(input), want, input);
    }
  });

  test('an embedded dotted quad is two groups, written in hex unless asked for', () => {
    assert.equal(text('64:ff9b::192.0.2.33'), '64:ff9b::c000:221');
    assert.equal(text('1:2:3:4:5:6:1.2.3.4'), '1:2:3:4:5:6:102:304');
    assert.equal(text('::1.2.3.4'), '::102:304');
    assert.equal(formatIP(ip('::1.2.3.4'), { dottedQuad: true }), '::1.2.3.4');
    assert.equal(formatIP(ip('::ffff:1.2.3.4'), { dottedQuad: true }), '::ffff:1.2.3.4');
    // Only IPv4-compatible and IPv4-mapped forms get the dotted quad, as inet_ntop does.
    assert.equal(formatIP(ip('64:ff9b::192.0.2.33'), { dottedQuad: true }), '64:ff9b::c000:221');
    assert.equal(formatIP(ip('::1'), { dottedQuad: true }), '::1');
  });

  test('malformed IPv6 is rejected', () => {
    const bad = ['1::2::3', '12345::1', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7', ':1:2:3:4:5:6:7', '1:2:3:4:5:6:7:',
      ':::', '1:::2', 'g::1', '[::1]', 'fe80::1%eth0', 'fe80::%1', '1.2.3.4::', '::1.2.3', '::1.2.3.4.5',
      '1:2:3:4:5:6:7:1.2.3.4', '1:2:3:4:5:6:7::1.2.3.4', '1.2.3.4:1::', '::256.1.1.1', ' ::1', '::1 ',
      '1:2:3:4:5:6:7:8::', '::1:2:3:4:5:6:7:8', ':'];
    for (const s of bad) assert.equal(parseIP(s, LENIENT), null, s);
  });

  test('an embedded dotted quad never takes leading zeros', () => {
    assert.equal(parseIP('::01.2.3.4', LENIENT), null);
    assert.equal(parseIP('::ffff:010.0.0.1', LENIENT), null);
  });

  test('IPv4-mapped addresses are rejected unless asked for, and stay IPv6', () => {
    for (const s of ['::ffff:1.2.3.4', '::FFFF:102:304', '0:0:0:0:0:ffff:1.2.3.4']) {
      assert.equal(parseIP(s), null, s);
      const p = parseIP(s, { v4Mapped: true });
      assert.equal(p?.family, 'IPv6', s);
      assert.equal(formatIP(p!), '::ffff:102:304');
    }
    // Neighbours of the mapped range are plain IPv6.
    assert.equal(text('::fffe:1.2.3.4'), '::fffe:102:304');
    assert.equal(text('1::ffff:1.2.3.4'), '1::ffff:102:304');
  });

  test('canonical text agrees with the WHATWG URL serializer and parses back to the same address', () => {
    const rand = rng(7);
    for (let n = 0; n < 3000; n++) {
      // Mostly zero groups, so that runs of every length and position occur.
      const groups = Array.from({ length: 8 }, () => (rand() < 0.5 ? 0 : Math.floor(rand() * 65536)));
      const full = groups.map((g) => g.toString(16).padStart(4, '0').toUpperCase()).join(':');
      const p = parseIP(full, { v4Mapped: true });
      assert.deepEqual(p?.groups, groups, full);
      const canon = formatIP(p!);
      assert.equal(`[${canon}]`, new URL(`http://[${full}]/`).hostname, full);
      assert.deepEqual(parseIP(canon, { v4Mapped: true })?.groups, groups, canon);
    }
  });
});

describe('CIDRs', () => {
  test('host bits are cleared and the text is canonical', () => {
    const cases: Array<[string, string, 'IPv4' | 'IPv6']> = [
      ['10.1.2.3/8', '10.0.0.0/8', 'IPv4'],
      ['0.0.0.0/0', '0.0.0.0/0', 'IPv4'],
      ['255.255.255.255/0', '0.0.0.0/0', 'IPv4'],
      ['192.168.1.77/32', '192.168.1.77/32', 'IPv4'],
      ['192.168.1.77/27', '192.168.1.64/27', 'IPv4'],
      ['2001:db8::1/32', '2001:db8::/32', 'IPv6'],
      ['ffff::ffff/127', 'ffff::fffe/127', 'IPv6'],
      ['2001:db8:abcd:1234::/50', '2001:db8:abcd::/50', 'IPv6'],
      ['2001:db8:abcd:ffff::/50', '2001:db8:abcd:c000::/50', 'IPv6'],
      ['FD00::1/128', 'fd00::1/128', 'IPv6'],
      ['::/0', '::/0', 'IPv6'],
    ];
    for (const [input, want, family] of cases) {
      assert.equal(cidrText(input), want, input);
      assert.equal(parseCIDR(input)?.family, family, input);
    }
  });

  test('bad prefixes and missing parts are rejected', () => {
    const bad = ['10.0.0.0/33', '::/129', '10.0.0.0', '10.0.0.0/', '/8', '10.0.0.0/8/8', '10.0.0.0/-1', '10.0.0.0/ 8',
      '10.0.0.0 /8', '10.0.0.0/8 ', '10.0.0.0/x', '10.0.0.0/1000', '256.0.0.0/8', 'fe80::%eth0/64', '::ffff:1.2.3.0/120'];
    for (const s of bad) assert.equal(parseCIDR(s), null, s);
    for (const v of [undefined, null, 8, {}]) assert.equal(parseCIDR(v), null);
  });

  test('leading zeros in the prefix and octets only when asked for', () => {
    assert.equal(parseCIDR('10.0.0.0/08'), null);
    assert.equal(cidrText('10.0.0.0/08', LENIENT), '10.0.0.0/8');
    assert.equal(cidrText('010.0.0.0/008', LENIENT), '10.0.0.0/8');
    assert.equal(cidrText('fd00::/064', LENIENT), 'fd00::/64');
    assert.equal(parseCIDR('10.0.0.0/0008', LENIENT), null);
  });

  test('a bare address is a full-length prefix only when asked for', () => {
    assert.equal(parseCIDR('10.0.0.1'), null);
    assert.equal(cidrText('10.0.0.1', { bare: true }), '10.0.0.1/32');
    assert.equal(cidrText('fd00::1', { bare: true }), 'fd00::1/128');
    assert.equal(parseCIDR('10.0.0.1/', { bare: true }), null);
  });

  test('IPv4-mapped CIDRs follow the address rule and are IPv6 CIDRs', () => {
    assert.equal(parseCIDR('::ffff:10.0.0.0/104'), null);
    const c = parseCIDR('::ffff:10.0.0.0/104', { v4Mapped: true });
    assert.equal(c?.family, 'IPv6');
    assert.equal(formatCIDR(c!), '::ffff:a00:0/104');
    assert.equal(formatCIDR(c!, { dottedQuad: true }), '::ffff:10.0.0.0/104');
  });
});

describe('containment', () => {
  test('addresses inside and just outside a prefix', () => {
    const cases: Array<[string, string, boolean]> = [
      ['10.0.0.0/8', '10.255.255.255', true],
      ['10.0.0.0/8', '11.0.0.0', false],
      ['10.0.0.0/8', '9.255.255.255', false],
      ['192.168.50.0/24', '192.168.50.11', true],
      ['192.168.50.0/24', '192.168.51.11', false],
      ['10.0.0.1/32', '10.0.0.1', true],
      ['10.0.0.1/32', '10.0.0.2', false],
      ['0.0.0.0/0', '255.255.255.255', true],
      ['fd00::/8', 'fdff:ffff::1', true],
      ['fd00::/8', 'fe00::', false],
      ['2001:db8::/33', '2001:db8:7fff::1', true],
      ['2001:db8::/33', '2001:db8:8000::', false],
      ['::/0', 'ffff::1', true],
      ['::ffff:0:0/96', '::ffff:1.2.3.4', true],
      ['::ffff:0:0/96', '::fffe:1.2.3.4', false],
    ];
    for (const [c, a, want] of cases) assert.equal(cidrContains(cidr(c), ip(a)), want, `${c} ∋ ${a}`);
  });

  test('never across families, IPv4-mapped addresses included', () => {
    assert.equal(cidrContains(cidr('0.0.0.0/0'), ip('::')), false);
    assert.equal(cidrContains(cidr('0.0.0.0/0'), ip('::ffff:10.0.0.1')), false);
    assert.equal(cidrContains(cidr('10.0.0.0/8'), ip('::ffff:10.0.0.1')), false);
    assert.equal(cidrContains(cidr('::/0'), ip('10.0.0.1')), false);
    assert.equal(cidrContains(cidr('::ffff:0:0/96'), ip('10.0.0.1')), false);
  });

  test('agrees with node:net BlockList within one family', () => {
    const rand = rng(11);
    for (let n = 0; n < 2000; n++) {
      const v6 = rand() < 0.5;
      const family = v6 ? 'IPv6' : 'IPv4';
      const bits = bitLength(family);
      const prefix = Math.floor(rand() * (bits + 1));
      const base = ipFromBigInt(BigInt(Math.floor(rand() * 2 ** 32)) << BigInt(bits - 32), family);
      const c = parseCIDR(`${formatIP(base)}/${prefix}`)!;
      // Addresses near the network, so that both answers occur often.
      const offset = BigInt(Math.floor(rand() * 2 ** 20)) << BigInt(Math.max(0, bits - prefix - 10));
      const a = ipFromBigInt(ipToBigInt(c) + offset, family);
      const list = new BlockList();
      list.addSubnet(formatIP(c), prefix, v6 ? 'ipv6' : 'ipv4');
      assert.equal(cidrContains(c, a), list.check(formatIP(a), v6 ? 'ipv6' : 'ipv4'), `${formatCIDR(c)} ∋ ${formatIP(a)}`);
    }
  });
});

describe('numeric form', () => {
  test('addresses convert to and from unsigned integers', () => {
    assert.equal(ipToBigInt(ip('10.0.0.1')), 0x0a000001n);
    assert.equal(ipToBigInt(ip('255.255.255.255')), 0xffffffffn);
    assert.equal(ipToBigInt(ip('::1')), 1n);
    assert.equal(ipToBigInt(ip('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff')), (1n << 128n) - 1n);
    assert.equal(ipToBigInt(ip('2001:db8::1')), 0x20010db8000000000000000000000001n);
    assert.equal(formatIP(ipFromBigInt(0xc0a80001n, 'IPv4')), '192.168.0.1');
    assert.equal(formatIP(ipFromBigInt(0x20010db8000000000000000000000001n, 'IPv6')), '2001:db8::1');
    // Wider values wrap to the address size.
    assert.equal(formatIP(ipFromBigInt((1n << 32n) + 5n, 'IPv4')), '0.0.0.5');
  });

  test('a CIDR converts to its network address', () => {
    assert.equal(ipToBigInt(cidr('10.1.2.3/8')), 0x0a000000n);
    assert.equal(ipToBigInt(cidr('2001:db8::5/32')), 0x20010db8n << 96n);
  });
});
