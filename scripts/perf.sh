#!/usr/bin/env bash
# perf.sh: profile the xdpsec daemons under load. Two namespaces joined by a
# veth run xdpsec with the example tunnel (AES-GCM-128 ESP, tunnel mode);
# iperf3 sends TCP through the tunnel while `perf record -g` samples both
# daemons. Writes, in $OUT (default ./perf-out):
#
#   xdpsec.folded   folded stacks (flamegraph fold)
#   xdpsec.svg      the flame graph (flamegraph svg, our own tool)
#   report.txt      perf report --no-children --stdio
#   bpf.txt         the XDP program's run_cnt, run_time_ns and ns per run
#                   (kernel.bpf_stats_enabled=1 while the load runs)
#
# and prints the top functions and the XDP numbers. Everything else
# (namespaces, daemons, iperf3, bpffs, the sysctl) is undone on exit, also
# when interrupted. Needs root, perf (linux-perf), iperf3 and bpftool.
#
#   SECONDS_PERF=5   seconds of perf record
#   OUT=perf-out     where the results go
#   FREQ=999         samples per second per CPU
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
[ "$(id -u)" = 0 ] || { echo "perf.sh: needs root (namespaces, XDP, AF_XDP, perf): run it with sudo" >&2; exit 1; }
for t in perf iperf3 bpftool; do
	command -v "$t" >/dev/null || { echo "perf.sh: needs $t (apt-get install linux-perf iperf3 bpftool)" >&2; exit 1; }
done
DUR=${SECONDS_PERF:-5}
FREQ=${FREQ:-999}
OUT=${OUT:-perf-out}
A=xdpsec-perf-a-$$ B=xdpsec-perf-b-$$
WORK=$(mktemp -d /tmp/xdpsec-perf-XXXXXX)
PIDS=()
STATS_WAS=$(sysctl -n kernel.bpf_stats_enabled)

cleanup() {
	set +e
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	sysctl -qw kernel.bpf_stats_enabled="$STATS_WAS"
	ip netns del "$A" 2>/dev/null
	ip netns del "$B" 2>/dev/null
	umount "$WORK/bpf" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== build (not stripped: perf resolves Go symbols from .symtab)"
go build -o "$WORK/xdpsec" ./cmd/xdpsec
go build -o "$WORK/flamegraph" ./cmd/flamegraph
X=$WORK/xdpsec FG=$WORK/flamegraph
mkdir -p "$OUT"

echo "== namespaces $A and $B, veth xa0 <-> xb0"
ip netns add "$A"; ip netns add "$B"
ip -n "$A" link add xa0 type veth peer name xb0 netns "$B"
for ns in "$A" "$B"; do
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
	ip -n "$ns" link set lo up
done
ip -n "$A" addr add 192.0.2.1/24 dev xa0; ip -n "$B" addr add 192.0.2.2/24 dev xb0
ip -n "$A" link set xa0 up; ip -n "$B" link set xb0 up

# Pins on a bpffs of our own (ip netns exec hides /sys/fs/bpf); the example
# configs copied so the key files can be chmod 600.
mkdir -p "$WORK/bpf"; mount -t bpf bpf "$WORK/bpf"
for s in a b; do
	cp "examples/tunnel-$s.conf" "examples/tunnel-$s.keys" "$WORK/"
	chmod 600 "$WORK/tunnel-$s.keys"
	printf 'pin %s\ncontrol %s\n' "$WORK/bpf" "$WORK/run-$s/control.sock" >>"$WORK/tunnel-$s.conf"
done

echo "== xdpsec run in each namespace"
# ip netns exec execs the daemon: $! is the daemon's own PID, which perf -p needs.
ip netns exec "$A" "$X" run --config "$WORK/tunnel-a.conf" >"$WORK/a.log" 2>&1 & PA=$!; PIDS+=($PA)
ip netns exec "$B" "$X" run --config "$WORK/tunnel-b.conf" >"$WORK/b.log" 2>&1 & PB=$!; PIDS+=($PB)
for s in a b; do
	ns=$A; [ $s = b ] && ns=$B
	for _ in $(seq 100); do
		ip netns exec "$ns" "$X" stats --socket "$WORK/run-$s/control.sock" >/dev/null 2>&1 && break
		sleep 0.1
	done
	ip netns exec "$ns" "$X" stats --socket "$WORK/run-$s/control.sock" >/dev/null || { cat "$WORK/$s.log"; exit 1; }
done
ip netns exec "$A" ping -c 2 -i 0.2 -w 10 198.51.100.2 >/dev/null

# The XDP programs attached to our two links (other programs may run on the
# host: bpftool lists them all).
XDP_IDS=$( (ip -n "$A" -j link show dev xa0; ip -n "$B" -j link show dev xb0) |
	/usr/bin/python3 -c 'import json,sys
for line, who in zip(sys.stdin, ["A", "B"]):
    for l in json.loads(line):
        print("%s/%s=%s" % (who, l["ifname"], l.get("xdp", {}).get("prog", {}).get("id", 0)))' | tr '\n' ' ')

echo "== load: iperf3 TCP A -> B through the tunnel for $((DUR + 2))s; perf record -g -F $FREQ on both daemons for ${DUR}s"
sysctl -qw kernel.bpf_stats_enabled=1
ip netns exec "$B" iperf3 -s -1 -p 5201 >"$WORK/iperf-s.log" 2>&1 & PIDS+=($!)
sleep 0.3
ip netns exec "$A" iperf3 -c 198.51.100.2 -p 5201 -t $((DUR + 2)) -J >"$WORK/iperf.json" 2>&1 & PI=$!; PIDS+=($PI)
sleep 1
perf record -q -g -F "$FREQ" -p "$PA,$PB" -o "$WORK/perf.data" -- sleep "$DUR" 2>"$WORK/perf-record.log" ||
	{ cat "$WORK/perf-record.log" >&2; exit 1; }
# The XDP program's own time, read while the load still runs.
bpftool prog show -j >"$WORK/progs.json"
wait "$PI" || true
sysctl -qw kernel.bpf_stats_enabled="$STATS_WAS"

echo "== results in $OUT/"
perf script -i "$WORK/perf.data" 2>/dev/null | "$FG" fold >"$OUT/xdpsec.folded"
"$FG" svg --title "xdpsec daemons under iperf3 TCP through the tunnel (${DUR}s, perf -F $FREQ)" "$OUT/xdpsec.folded" >"$OUT/xdpsec.svg"
perf report -i "$WORK/perf.data" --no-children --stdio -g none --sort dso,symbol 2>/dev/null >"$OUT/report.txt"
/usr/bin/python3 - "$WORK/progs.json" "$WORK/iperf.json" "$XDP_IDS" >"$OUT/bpf.txt" <<'PY'
import json, sys
ids = {int(i.split('=')[1]): i.split('=')[0] for i in sys.argv[3].split()}
progs = [p for p in json.load(open(sys.argv[1])) if p['id'] in ids]
for p in progs:
    cnt, ns = p.get('run_cnt', 0), p.get('run_time_ns', 0)
    per = '%.1f ns/run' % (ns / cnt) if cnt else 'no runs'
    print('%s: xdp prog id %d %s: run_cnt %d run_time_ns %d -> %s' % (ids[p['id']], p['id'], p['name'], cnt, ns, per))
if not progs:
    print('the XDP programs of xa0/xb0 (%s) are not in bpftool prog show' % sys.argv[3])
try:
    r = json.load(open(sys.argv[2]))['end']['sum_received']['bits_per_second']
    print('iperf3 through the tunnel: %.0f Mbit/s' % (r / 1e6))
except Exception as e:
    print('iperf3: no result (%s)' % e)
PY
echo "-- perf report --no-children (top of $OUT/report.txt)"
grep -v '^#' "$OUT/report.txt" | grep -v '^$' | head -15
echo "-- flamegraph top (self samples, from $OUT/xdpsec.folded)"
"$FG" top -n 12 "$OUT/xdpsec.folded"
echo "-- XDP program (kernel.bpf_stats_enabled=1)"
cat "$OUT/bpf.txt"
echo "== done: open $OUT/xdpsec.svg in a browser; tearing down"
