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
. scripts/lib/tunnel.sh
tunnel_init perf
for t in perf iperf3 bpftool; do
	command -v "$t" >/dev/null || { echo "perf.sh: needs $t (apt-get install linux-perf iperf3 bpftool)" >&2; exit 1; }
done
DUR=${SECONDS_PERF:-5}
FREQ=${FREQ:-999}
OUT=${OUT:-perf-out}
STATS_WAS=$(sysctl -n kernel.bpf_stats_enabled)
tunnel_on_exit() { sysctl -qw kernel.bpf_stats_enabled="$STATS_WAS"; }

echo "== build (not stripped: perf resolves Go symbols from .symtab)"
tunnel_build
go build -o "$WORK/flamegraph" ./cmd/flamegraph
FG=$WORK/flamegraph
mkdir -p "$OUT"

echo "== namespaces $A and $B, veth xa0 <-> xb0"
tunnel_netns
echo "== xdpsec run in each namespace"
tunnel_start

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
tunnel_listening "$B" 5201
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
