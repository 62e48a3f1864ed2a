#!/usr/bin/env bash
# bench-tunnel.sh: iperf3 TCP through the xdpsec tunnel against the plain
# veth, in the same run, with the TUN offloads (vnet_hdr GSO/GRO) on and off.
# Two namespaces joined by a veth (tso/gso/gro off on the veth, as the
# issue's reference asks), xdpsec in each with the shipped example configs
# (AES-GCM-128 ESP, tunnel mode). For each TUN offload setting the daemons
# are started afresh, then ROUNDS rounds of: iperf3 over the plain veth,
# iperf3 through the tunnel. Everything is torn down on exit, also when
# interrupted. Needs root.
#
#   SECONDS_IPERF=3  iperf3 duration per run
#   ROUNDS=3         rounds per offload setting
#   MODES="on off"   TUN offload settings to measure (config `tun-offload`)
#   XDPSEC_BIN=path  use this xdpsec binary instead of building one (keep it
#                    for `perf report` to resolve Go symbols after the run)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
[ "$(id -u)" = 0 ] || { echo "bench-tunnel.sh: needs root (namespaces, XDP, AF_XDP): run it with sudo" >&2; exit 1; }
DUR=${SECONDS_IPERF:-3}
ROUNDS=${ROUNDS:-3}
MODES=${MODES:-on off}
A=xdpsec-bench-a-$$ B=xdpsec-bench-b-$$
WORK=$(mktemp -d /tmp/xdpsec-bench-XXXXXX)
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

X=${XDPSEC_BIN:-$WORK/xdpsec}
[ -n "${XDPSEC_BIN:-}" ] || go build -o "$X" ./cmd/xdpsec

ip netns add "$A"; ip netns add "$B"
ip -n "$A" link add xa0 type veth peer name xb0 netns "$B"
for ns in "$A" "$B"; do
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
	ip -n "$ns" link set lo up
done
ip -n "$A" addr add 192.0.2.1/24 dev xa0; ip -n "$A" addr add 2001:db8::1/64 dev xa0 nodad
ip -n "$B" addr add 192.0.2.2/24 dev xb0; ip -n "$B" addr add 2001:db8::2/64 dev xb0 nodad
ip -n "$A" link set xa0 up; ip -n "$B" link set xb0 up
ip netns exec "$A" ethtool -K xa0 tso off gso off gro off >/dev/null
ip netns exec "$B" ethtool -K xb0 tso off gso off gro off >/dev/null
mkdir -p "$WORK/bpf"; mount -t bpf bpf "$WORK/bpf"

# iperf3 TCP A -> B to $1:$2 for DUR seconds; prints Mbit/s received.
iperf() {
	ip netns exec "$B" iperf3 -s -1 -p "$2" >/dev/null 2>&1 & local srv=$!
	PIDS+=("$srv")
	sleep 0.3
	ip netns exec "$A" iperf3 -c "$1" -p "$2" -t "$DUR" -J |
		/usr/bin/python3 -c 'import json,sys; print("%.0f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))'
	wait "$srv" 2>/dev/null || true
}

echo "kernel $(uname -r), $(nproc) vCPU $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), iperf3 ${DUR}s"
echo "| tun-offload | round | plain veth Mbit/s | tunnel Mbit/s | tunnel/plain |"
echo "| --- | --- | --- | --- | --- |"
# start_daemons MODE: xdpsec in both namespaces with `tun-offload MODE`.
start_daemons() {
	DPIDS=()
	for s in a b; do
		ns=$A; [ $s = b ] && ns=$B
		cp "examples/tunnel-$s.conf" "examples/tunnel-$s.keys" "$WORK/"
		chmod 600 "$WORK/tunnel-$s.keys"
		printf 'pin %s\ncontrol %s\ntun-offload %s\n' "$WORK/bpf" "$WORK/run-$s/control.sock" "$1" >>"$WORK/tunnel-$s.conf"
		ip netns exec "$ns" "$X" run --config "$WORK/tunnel-$s.conf" >"$WORK/$s-$1.log" 2>&1 & DPIDS+=($!)
		PIDS+=($!)
	done
	for s in a b; do
		ns=$A; [ $s = b ] && ns=$B
		for _ in $(seq 100); do
			ip netns exec "$ns" "$X" stats --socket "$WORK/run-$s/control.sock" >/dev/null 2>&1 && break
			sleep 0.1
		done
		ip netns exec "$ns" "$X" stats --socket "$WORK/run-$s/control.sock" >/dev/null || { cat "$WORK/$s-$1.log"; exit 1; }
	done
	ip netns exec "$A" ping -c 2 -i 0.2 -w 10 198.51.100.2 >/dev/null
}

stop_daemons() {
	if [ -n "${VERBOSE:-}" ]; then
		ip netns exec "$A" "$X" stats --socket "$WORK/run-a/control.sock"
		ip netns exec "$B" "$X" stats --socket "$WORK/run-b/control.sock"
	fi
	for p in "${DPIDS[@]}"; do kill -TERM "$p"; done
	for p in "${DPIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}

# Rounds interleave the settings, so a noisy neighbour hits them alike.
port=5201
for r in $(seq "$ROUNDS"); do
	for mode in $MODES; do
		start_daemons "$mode"
		plain=$(iperf 192.0.2.2 $port); port=$((port + 1))
		tun=$(iperf 198.51.100.2 $port); port=$((port + 1))
		echo "| $mode | $r | $plain | $tun | $(/usr/bin/python3 -c "print('%.2f' % ($tun/$plain))") |"
		stop_daemons
	done
done
