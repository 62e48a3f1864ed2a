#!/usr/bin/env bash
# tunnel-demo.sh: two namespaces joined by a veth, xdpsec in each with the
# shipped example configs (AES-GCM-128 ESP, tunnel mode, IPv4 and IPv6 inner),
# ping and a short iperf3 through the tunnel and over the plain veth, then
# capabilities, throughput and counters. Everything is torn down on exit,
# also when interrupted. Needs root.
#
#   SECONDS_IPERF=3  iperf3 duration per run
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/tunnel.sh
tunnel_init demo
DUR=${SECONDS_IPERF:-3}

echo "== build"
tunnel_build
echo "== namespaces $A and $B, veth xa0 (192.0.2.1, 2001:db8::1) <-> xb0 (192.0.2.2, 2001:db8::2)"
tunnel_netns
echo "== xdpsec run in each namespace"
tunnel_start

echo "== capabilities (host A)"
xs a caps --view current || true

echo "== ping through the tunnel"
ip netns exec "$A" ping -c 3 -i 0.2 -w 10 198.51.100.2
ip netns exec "$B" ping -c 3 -i 0.2 -w 10 2001:db8:a::1

echo "== iperf3 TCP, ${DUR}s: plain veth, then through the tunnel"
PLAIN=$(tunnel_iperf 192.0.2.2 5201 "$DUR")
TUN=$(tunnel_iperf 198.51.100.2 5202 "$DUR")
echo "plain veth: $PLAIN Mbit/s   tunnel (ESP AES-GCM-128 via xdpsec): $TUN Mbit/s   ratio $(/usr/bin/python3 -c "print('%.2f' % ($TUN/$PLAIN))")"

echo "== counters (host A)"
xs a stats
echo "== counters (host B)"
xs b stats
echo "== done; tearing down"
