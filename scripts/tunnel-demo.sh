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
export PATH=$PATH:/usr/local/go/bin
[ "$(id -u)" = 0 ] || { echo "tunnel-demo.sh: needs root (namespaces, XDP, AF_XDP): run it with sudo" >&2; exit 1; }
DUR=${SECONDS_IPERF:-3}
A=xdpsec-demo-a-$$ B=xdpsec-demo-b-$$
WORK=$(mktemp -d /tmp/xdpsec-demo-XXXXXX)
PIDS=()

cleanup() {
	set +e
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	ip netns del "$A" 2>/dev/null
	ip netns del "$B" 2>/dev/null
	umount "$WORK/bpf" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== build"
go build -o "$WORK/xdpsec" ./cmd/xdpsec
X=$WORK/xdpsec

echo "== namespaces $A and $B, veth xa0 <-> xb0"
ip netns add "$A"; ip netns add "$B"
ip -n "$A" link add xa0 type veth peer name xb0 netns "$B"
for ns in "$A" "$B"; do
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
	ip -n "$ns" link set lo up
done
ip -n "$A" addr add 192.0.2.1/24 dev xa0; ip -n "$A" addr add 2001:db8::1/64 dev xa0 nodad
ip -n "$B" addr add 192.0.2.2/24 dev xb0; ip -n "$B" addr add 2001:db8::2/64 dev xb0 nodad
ip -n "$A" link set xa0 up; ip -n "$B" link set xb0 up
# The plain-veth reference, with offloads off as the tunnel has none.
ip netns exec "$A" ethtool -K xa0 tso off gso off gro off >/dev/null 2>&1 || true
ip netns exec "$B" ethtool -K xb0 tso off gso off gro off >/dev/null 2>&1 || true

# Pins on a bpffs of our own (ip netns exec hides /sys/fs/bpf); configs
# copied to a private directory so the key files can be chmod 600.
mkdir -p "$WORK/bpf"; mount -t bpf bpf "$WORK/bpf"
for s in a b; do
	cp "examples/tunnel-$s.conf" "examples/tunnel-$s.keys" "$WORK/"
	chmod 600 "$WORK/tunnel-$s.keys"
	printf 'pin %s\ncontrol %s\n' "$WORK/bpf" "$WORK/run-$s/control.sock" >>"$WORK/tunnel-$s.conf"
done

echo "== xdpsec run in each namespace"
ip netns exec "$A" "$X" run --config "$WORK/tunnel-a.conf" >"$WORK/a.log" 2>&1 & PIDS+=($!)
ip netns exec "$B" "$X" run --config "$WORK/tunnel-b.conf" >"$WORK/b.log" 2>&1 & PIDS+=($!)
for s in a b; do
	ns=$A; [ $s = b ] && ns=$B
	for _ in $(seq 100); do
		ip netns exec "$ns" "$X" stats --socket "$WORK/run-$s/control.sock" >/dev/null 2>&1 && break
		sleep 0.1
	done
	ip netns exec "$ns" "$X" stats --socket "$WORK/run-$s/control.sock" >/dev/null || { cat "$WORK/$s.log"; exit 1; }
done

if "$X" help caps >/dev/null 2>&1; then
	echo "== capabilities (host A)"
	ip netns exec "$A" "$X" caps --socket "$WORK/run-a/control.sock" --view current || true
fi

echo "== ping through the tunnel"
ip netns exec "$A" ping -c 3 -i 0.2 -w 10 198.51.100.2
ip netns exec "$B" ping -c 3 -i 0.2 -w 10 2001:db8:a::1

echo "== iperf3 TCP, ${DUR}s: plain veth, then through the tunnel"
ip netns exec "$B" iperf3 -s -D -1 -p 5201 --logfile "$WORK/iperf-s1.log"; sleep 0.3
PLAIN=$(ip netns exec "$A" iperf3 -c 192.0.2.2 -p 5201 -t "$DUR" -J | /usr/bin/python3 -c 'import json,sys; print("%.0f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))')
ip netns exec "$B" iperf3 -s -D -1 -p 5202 --logfile "$WORK/iperf-s2.log"; sleep 0.3
TUN=$(ip netns exec "$A" iperf3 -c 198.51.100.2 -p 5202 -t "$DUR" -J | /usr/bin/python3 -c 'import json,sys; print("%.0f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))')
echo "plain veth: $PLAIN Mbit/s   tunnel (ESP AES-GCM-128 via xdpsec): $TUN Mbit/s   ratio $(/usr/bin/python3 -c "print('%.2f' % ($TUN/$PLAIN))")"

echo "== counters (host A)"
ip netns exec "$A" "$X" stats --socket "$WORK/run-a/control.sock"
echo "== counters (host B)"
ip netns exec "$B" "$X" stats --socket "$WORK/run-b/control.sock"
echo "== done; tearing down"
