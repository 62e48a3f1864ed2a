# tunnel.sh: the two-namespace xdpsec tunnel that demo, benchmark and profile
# scripts share. Source it from a script under scripts/ (after `set -euo
# pipefail` and `cd` to the repository root), then:
#
#   tunnel_init NAME        namespaces xdpsec-NAME-{a,b}-PID, a private work
#                           directory, cleanup on EXIT/INT/TERM
#   tunnel_build            $X: the xdpsec binary (XDPSEC_BIN or a fresh build,
#                           not stripped so perf resolves Go symbols)
#   tunnel_netns            veth xa0 (192.0.2.1, 2001:db8::1) <-> xb0 (192.0.2.2,
#                           2001:db8::2), tso/gso/gro off, a bpffs for the pins
#   tunnel_start [LINE...]  xdpsec run in both namespaces with the example
#                           configs plus LINEs; $PA/$PB are the daemons' PIDs
#   tunnel_stop             SIGTERM both daemons and wait for them
#   xs a|b ARGS...          the xdpsec CLI against side a's or b's daemon
#   tunnel_iperf DST PORT DURATION   iperf3 TCP A -> DST, prints Mbit/s
#
# Only processes this file started are signalled, by PID; everything it made
# (namespaces, mounts, files) is removed on exit, also when interrupted.
# Scripts can add work to the cleanup by defining tunnel_on_exit.

tunnel_init() {
	[ "$(id -u)" = 0 ] || { echo "$1: needs root (namespaces, XDP, AF_XDP): run it with sudo" >&2; exit 1; }
	export PATH=$PATH:/usr/local/go/bin
	A=xdpsec-$1-a-$$ B=xdpsec-$1-b-$$
	WORK=$(mktemp -d "/tmp/xdpsec-$1-XXXXXX")
	PIDS=() DPIDS=()
	trap tunnel_cleanup EXIT
	trap 'exit 130' INT TERM
}

tunnel_cleanup() {
	set +e
	if declare -F tunnel_on_exit >/dev/null; then tunnel_on_exit; fi
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	ip netns del "$A" 2>/dev/null
	ip netns del "$B" 2>/dev/null
	umount "$WORK/bpf" 2>/dev/null
	rm -rf "$WORK"
}

tunnel_build() {
	X=${XDPSEC_BIN:-$WORK/xdpsec}
	[ -n "${XDPSEC_BIN:-}" ] || go build -o "$X" ./cmd/xdpsec
}

tunnel_netns() {
	ip netns add "$A"; ip netns add "$B"
	for ns in "$A" "$B"; do
		# DAD off before the veth exists, so its addresses inherit it.
		ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
		ip -n "$ns" link set lo up
	done
	ip -n "$A" link add xa0 type veth peer name xb0 netns "$B"
	ip -n "$A" addr add 192.0.2.1/24 dev xa0; ip -n "$A" addr add 2001:db8::1/64 dev xa0 nodad
	ip -n "$B" addr add 192.0.2.2/24 dev xb0; ip -n "$B" addr add 2001:db8::2/64 dev xb0 nodad
	ip -n "$A" link set xa0 up; ip -n "$B" link set xb0 up
	# The plain-veth reference with offloads off, as the tunnel has none.
	ip netns exec "$A" ethtool -K xa0 tso off gso off gro off >/dev/null 2>&1 || true
	ip netns exec "$B" ethtool -K xb0 tso off gso off gro off >/dev/null 2>&1 || true
	# Pins on a bpffs of our own: ip netns exec hides /sys/fs/bpf.
	mkdir -p "$WORK/bpf"; mount -t bpf bpf "$WORK/bpf"
}

# tunnel_start [LINE...]: the example configs are copied into $WORK so the
# key files can be chmod 600 (git keeps no modes), LINEs appended to both.
tunnel_start() {
	DPIDS=()
	for s in a b; do
		cp "examples/tunnel-$s.conf" "examples/tunnel-$s.keys" "$WORK/"
		chmod 600 "$WORK/tunnel-$s.keys"
		chmod go-w "$WORK/tunnel-$s.conf" # the daemon refuses a config others may write
		{
			printf 'pin %s\ncontrol %s\n' "$WORK/bpf" "$WORK/run-$s/control.sock"
			for line in "$@"; do printf '%s\n' "$line"; done
		} >>"$WORK/tunnel-$s.conf"
	done
	# ip netns exec execs the daemon: $! is the daemon's own PID.
	ip netns exec "$A" "$X" run --config "$WORK/tunnel-a.conf" >"$WORK/a.log" 2>&1 & PA=$!
	ip netns exec "$B" "$X" run --config "$WORK/tunnel-b.conf" >"$WORK/b.log" 2>&1 & PB=$!
	DPIDS=("$PA" "$PB"); PIDS+=("$PA" "$PB")
	for s in a b; do
		for _ in $(seq 100); do
			xs "$s" stats >/dev/null 2>&1 && break
			sleep 0.1
		done
		xs "$s" stats >/dev/null || { cat "$WORK/$s.log"; exit 1; }
	done
	ip netns exec "$A" ping -c 2 -i 0.2 -w 10 198.51.100.2 >/dev/null
}

tunnel_stop() {
	for p in "${DPIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${DPIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	DPIDS=()
}

xs() {
	local s=$1 ns=$A
	shift
	[ "$s" = b ] && ns=$B
	ip netns exec "$ns" "$X" "$@" --socket "$WORK/run-$s/control.sock"
}

# tunnel_listening NS PORT: wait (at most 5 s) until a TCP socket listens on
# PORT in NS: an iperf3 client started before its server listens gets
# "connection refused" and, with -J, still exits 0.
tunnel_listening() {
	local i
	for i in $(seq 50); do
		[ -n "$(ip netns exec "$1" ss -Htln "sport = :$2")" ] && return 0
		sleep 0.1
	done
	echo "tunnel.sh: nothing listens on port $2 in $1 after 5 s" >&2
	return 1
}

tunnel_iperf() {
	ip netns exec "$B" iperf3 -s -1 -p "$2" >/dev/null 2>&1 & local srv=$!
	PIDS+=("$srv")
	tunnel_listening "$B" "$2"
	ip netns exec "$A" iperf3 -c "$1" -p "$2" -t "$3" -J |
		/usr/bin/python3 -c 'import json,sys; print("%.0f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))'
	wait "$srv" 2>/dev/null || true
}
