#!/usr/bin/env bash
# demo.sh: the README's first command. On a fresh Debian 12 machine, as root:
# installs what xdpsec needs (scripts/setup.sh), then runs the tunnel demo
# (scripts/tunnel-demo.sh): two namespaces, an xdpsec daemon in each with the
# shipped example configs (AES-GCM-128 ESP, tunnel mode, IPv4 and IPv6),
# ping and iperf3 through the tunnel next to the plain veth, capabilities and
# counters; everything is removed on exit, also when interrupted.
#
# scripts/datapath-demo.sh shows the XDP classifier alone (attach, generated
# IPsec traffic, counters by reason).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (it installs packages, creates namespaces and loads BPF)" >&2; exit 1; }
./scripts/setup.sh
exec ./scripts/tunnel-demo.sh "$@"
