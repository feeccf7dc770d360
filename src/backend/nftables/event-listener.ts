// The nftables mode's change listener: a few lines of Perl (perl-base is part of every Debian
// system, and Node cannot open a netlink socket) that subscribe to nf_tables' notification group
// and print one line per object changed, in `nft monitor`'s words but without the object's
// content, and `nft monitor`'s line for each committed generation:
//
//   add element ip kube-proxy service-ips
//   delete rule ip kube-proxy services
//   # new generation 42 by process 1234 (nft)
//
// It prints `# listening` once subscribed.
//
// Why not `nft monitor`: nft 1.0.6 spends ~5 ms of CPU per element it prints at 30,000 Services
// (it formats each from its cache of the whole ruleset), a full core during a stream of changes,
// and it loads the whole ruleset before it subscribes (seconds at that size). This listener is
// subscribed at once and costs microseconds a notification. It asks for a 64 MiB receive buffer
// (SO_RCVBUFFORCE, root only; else the default); when the kernel still drops notifications
// (ENOBUFS) it exits, and the proxy reads its rules back as for any dead monitor.

/** NFNLGRP_NFTABLES, as a bind() group mask. */
const NFTABLES_GROUP_MASK = 1 << 6;
const RECEIVE_BUFFER_BYTES = 64 << 20;
/** Printed once subscribed: every commit from then on is printed. */
export const LISTENING = '# listening';

const SCRIPT = String.raw`
use strict; use warnings;
my %family = (1 => 'inet', 2 => 'ip', 3 => 'arp', 5 => 'netdev', 7 => 'bridge', 10 => 'ip6');
# NFT_MSG_NEWTABLE (0) .. NFT_MSG_DELSETELEM (14): new, get, del of each kind in turn.
my @kind = map { ($_) x 3 } qw(table chain rule set element);
# The attribute holding the object's name (the chain, for a rule; the set, for an element).
my %name_attr = (chain => 3, rule => 2, set => 2, element => 2, obj => 2, flowtable => 2);
socket(my $s, 16, 3, 12) or die "netlink socket: $!\n";                      # AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER
setsockopt($s, 1, 33, pack('i', ${RECEIVE_BUFFER_BYTES}))                      # SO_RCVBUFFORCE
  or setsockopt($s, 1, 8, pack('i', ${RECEIVE_BUFFER_BYTES}));                 # SO_RCVBUF
bind($s, pack('SSLL', 16, 0, 0, ${NFTABLES_GROUP_MASK})) or die "netlink bind: $!\n";
syswrite(STDOUT, "${LISTENING}\n");
sub attrs {
  my ($p) = @_; my %a; my $o = 0;
  while ($o + 4 <= length $p) {
    my ($l, $t) = unpack('SS', substr($p, $o, 4)); last if $l < 4;
    $a{$t & 0x3fff} = substr($p, $o + 4, $l - 4); $o += ($l + 3) & ~3;
  }
  return \%a;
}
sub str { my ($v) = @_; return undef unless defined $v; $v =~ s/\0.*//s; return $v }
sub u32 { my ($v) = @_; return defined $v && length $v >= 4 ? unpack('N', $v) : 0 }
while (1) {
  my $buf = '';
  defined(recv($s, $buf, 1 << 20, 0)) or die "netlink recv: $!\n";
  my $out = ''; my $o = 0;
  while ($o + 16 <= length $buf) {
    my ($len, $type) = unpack('LS', substr($buf, $o, 6)); last if $len < 16;
    my $m = substr($buf, $o + 16, $len - 16); $o += ($len + 3) & ~3;
    next unless ($type >> 8) == 10;                                            # NFNL_SUBSYS_NFTABLES
    my $msg = $type & 0xff; my $f = unpack('C', $m); my $a = attrs(substr($m, 4));
    if ($msg == 15) {                                                          # NFT_MSG_NEWGEN
      $out .= sprintf("# new generation %u by process %u (%s)\n", u32($a->{1}), u32($a->{2}), str($a->{3}) // '');
      next;
    }
    my ($verb, $k);
    if ($msg <= 14) { $k = $kind[$msg]; $verb = $msg % 3 == 2 ? 'delete' : 'add' }
    elsif ($msg == 18 || $msg == 20) { $k = 'obj'; $verb = $msg == 18 ? 'add' : 'delete' }
    elsif ($msg == 22 || $msg == 24) { $k = 'flowtable'; $verb = $msg == 22 ? 'add' : 'delete' }
    else { next }
    my $line = "$verb $k " . ($family{$f} // "family$f") . ' ' . (str($a->{1}) // '?');
    my $name = $k eq 'table' ? undef : str($a->{$name_attr{$k}});
    $line .= " $name" if defined $name;
    $out .= "$line\n";
  }
  syswrite(STDOUT, $out) if length $out;
}
`;

/** The listener's command line. */
export const NF_EVENT_LISTENER = ['perl', '-e', SCRIPT];
