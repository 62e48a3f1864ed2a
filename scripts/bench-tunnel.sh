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
#   VERBOSE=1        print both daemons' counters after each round
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/tunnel.sh
tunnel_init bench
DUR=${SECONDS_IPERF:-3}
ROUNDS=${ROUNDS:-3}
MODES=${MODES:-on off}
tunnel_build
tunnel_netns

echo "kernel $(uname -r), $(nproc) vCPU $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), iperf3 ${DUR}s"
echo "| tun-offload | round | plain veth Mbit/s | tunnel Mbit/s | tunnel/plain |"
echo "| --- | --- | --- | --- | --- |"
# Rounds interleave the settings, so a noisy neighbour hits them alike.
port=5201
for r in $(seq "$ROUNDS"); do
	for mode in $MODES; do
		tunnel_start "tun-offload $mode"
		plain=$(tunnel_iperf 192.0.2.2 $port "$DUR"); port=$((port + 1))
		tun=$(tunnel_iperf 198.51.100.2 $port "$DUR"); port=$((port + 1))
		echo "| $mode | $r | $plain | $tun | $(/usr/bin/python3 -c "print('%.2f' % ($tun/$plain))") |"
		if [ -n "${VERBOSE:-}" ]; then xs a stats; xs b stats; fi
		tunnel_stop
	done
done
