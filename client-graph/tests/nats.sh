# Network namespaces for the direct-path NAT tests (client-graph/tests/
# direct_call.rs, `Nats`) and benches/direct_path/setup.py --nats:
#   bash nats.sh TAG KIND
# TAG prefixes every namespace and interface (at most 13 bytes); KIND is home,
# symmetric (MASQUERADE --random-fully on both NATs), a-symmetric or
# b-symmetric (on one), a-cgn-b-symmetric (a's NAT moves UDP ports into
# 20000-20999 (below the ephemeral ports a socket is given, so never its own
# port) but keeps one mapping per socket for every destination, as
# RFC 6888 asks of carrier-grade NATs; b's symmetric), or ipv6 (symmetric,
# plus routed IPv6 behind stateful firewalls). Namespaces TAGpub (10.0.1.1, 10.0.2.1), TAGna and
# TAGnb (the NATs: 10.0.1.2, 10.0.2.2), TAGa (192.168.1.2) and TAGb
# (192.168.2.2); remove them with `ip netns del`.
set -e
S=$1
ex() { ip netns exec "$@"; }
for n in pub na nb a b; do ip netns add $S$n; ex $S$n ip link set lo up; done
link() { ip link add $1 type veth peer name $3; ip link set $1 netns $2; ip link set $3 netns $4;
         ex $2 ip addr add $5 dev $1; ex $4 ip addr add $6 dev $3;
         ex $2 ip link set $1 up; ex $4 ip link set $3 up; }
link ${S}pa ${S}pub ${S}ap ${S}na 10.0.1.1/24 10.0.1.2/24
link ${S}pb ${S}pub ${S}bp ${S}nb 10.0.2.1/24 10.0.2.2/24
link ${S}la ${S}na ${S}al ${S}a 192.168.1.1/24 192.168.1.2/24
link ${S}lb ${S}nb ${S}bl ${S}b 192.168.2.1/24 192.168.2.2/24
for n in pub na nb; do ex $S$n sysctl -qw net.ipv4.ip_forward=1; done
ex ${S}na ip route add default via 10.0.1.1
ex ${S}nb ip route add default via 10.0.2.1
ex ${S}a ip route add default via 192.168.1.1
ex ${S}b ip route add default via 192.168.2.1
for x in a b; do
  RANDOM_PORTS=
  case $2 in symmetric|ipv6|$x-symmetric|a-cgn-$x-symmetric) RANDOM_PORTS=--random-fully;; esac
  case $2 in $x-cgn-*)
    # Endpoint-independent, port moved: without --random the kernel reuses
    # a socket's mapped port for every destination.
    ex ${S}n$x iptables -w -t nat -A POSTROUTING -o ${S}${x}p -p udp -j MASQUERADE --to-ports 20000-20999;;
  esac
  ex ${S}n$x iptables -w -t nat -A POSTROUTING -o ${S}${x}p -j MASQUERADE $RANDOM_PORTS
  # A home router's firewall: nothing new comes in from outside.
  ex ${S}n$x iptables -w -A INPUT -i ${S}${x}p -m conntrack --ctstate NEW -j DROP
  ex ${S}n$x iptables -w -A FORWARD -i ${S}${x}p -m conntrack --ctstate NEW -j DROP
done
[ "$2" = ipv6 ] || exit 0
for n in pub na nb; do ex $S$n sysctl -qw net.ipv6.conf.all.forwarding=1; done
a6() { ex $1 ip -6 addr add $2 dev $3 nodad; }
a6 ${S}pub 2001:db8:1::1/64 ${S}pa; a6 ${S}na 2001:db8:1::2/64 ${S}ap
a6 ${S}pub 2001:db8:2::1/64 ${S}pb; a6 ${S}nb 2001:db8:2::2/64 ${S}bp
a6 ${S}na 2001:db8:a::1/64 ${S}la; a6 ${S}a 2001:db8:a::2/64 ${S}al
a6 ${S}nb 2001:db8:b::1/64 ${S}lb; a6 ${S}b 2001:db8:b::2/64 ${S}bl
ex ${S}pub ip -6 route add 2001:db8:a::/64 via 2001:db8:1::2
ex ${S}pub ip -6 route add 2001:db8:b::/64 via 2001:db8:2::2
ex ${S}na ip -6 route add default via 2001:db8:1::1
ex ${S}nb ip -6 route add default via 2001:db8:2::1
ex ${S}a ip -6 route add default via 2001:db8:a::1
ex ${S}b ip -6 route add default via 2001:db8:b::1
for x in a b; do
  # No NAT for IPv6, but the same firewall: nothing new comes in.
  ex ${S}n$x ip6tables -w -A INPUT -i ${S}${x}p -m conntrack --ctstate NEW -j DROP
  ex ${S}n$x ip6tables -w -A FORWARD -i ${S}${x}p -m conntrack --ctstate NEW -j DROP
done
