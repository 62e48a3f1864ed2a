#!/usr/bin/env bash
# datapath-demo.sh: xdpsec's XDP classifier on a veth between two fresh network
# namespaces, fed with generated IPsec and plain traffic.
#
#   1. installs what is missing (scripts/setup.sh) and builds ./xdpsec into a
#      temporary directory;
#   2. creates namespaces rx and tx joined by a veth (unique names, addresses
#      from 192.0.2.0/24 and 2001:db8::/64) and attaches xdpsec to rx's end;
#   3. sends, from tx, scapy-built ESP, ESP-in-UDP (4500 and 4501), AH, IKE,
#      NAT keepalives, fragments, malformed IPsec and plain ICMP/TCP/UDP
#      (tests/datapath/traffic.py): with no SA programmed, IPsec is "no-state";
#   4. programs the SAs with `xdpsec attach --sa ...`, sends the same traffic
#      again: packets of known SAs are now steered ("steer-fallback": the
#      program chose the rx queue's AF_XDP socket and, with no engine bound
#      yet, handed them to the kernel instead of dropping them);
#   5. shows `xdpsec status` (counters by reason and per SA), detaches, and
#      removes everything, also when interrupted (trap EXIT INT TERM).
#
# Run as root on Debian 12: ./scripts/datapath-demo.sh   (about 10 s once set up)
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
export PATH=$PATH:/usr/local/go/bin

if [ "$(id -u)" != 0 ]; then
	echo "datapath-demo.sh: run as root (it creates network namespaces and loads BPF)" >&2
	exit 1
fi

tag=$$
ns_rx=xdpsec-demo-rx-$tag
ns_tx=xdpsec-demo-tx-$tag
if_rx=xdr$tag # interface names: 15 bytes at most; pins are keyed by name
if_tx=xdt$tag
tmp=$(mktemp -d /tmp/xdpsec-demo.XXXXXX)
bin=$tmp/xdpsec

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -x "$bin" ] && [ -d "/sys/fs/bpf/xdpsec/$if_rx" ]; then
		# Still attached (interrupted): detach while the link exists.
		nsenter --net="/run/netns/$ns_rx" "$bin" detach --link "$if_rx" >/dev/null 2>&1 || true
	fi
	ip netns del "$ns_rx" 2>/dev/null || true
	ip netns del "$ns_tx" 2>/dev/null || true
	if [ -x "$bin" ] && [ -d "/sys/fs/bpf/xdpsec/$if_rx" ]; then
		"$bin" detach --link "$if_rx" >/dev/null 2>&1 || true # link gone: removes the pins
	fi
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() { printf '\n== %s\n' "$*"; }
# xdpsec in rx's network namespace. Not `ip netns exec`: that gives the
# process a private /sys without the BPF filesystem, where pins would not
# outlive it (xdpsec refuses and says so).
xdpsec_rx() { nsenter --net="/run/netns/$ns_rx" "$bin" "$@"; }
send() {
	ip netns exec "$ns_tx" /usr/bin/python3 tests/datapath/traffic.py send "$if_tx" "$mac_rx" "$1" >/dev/null
	sleep 0.3 # let the veth deliver the last frames before reading counters
}
# counters NAME...: the named reason counters from status -j, one line.
counters() {
	xdpsec_rx status --link "$if_rx" -j | /usr/bin/python3 -c '
import json, sys
c = json.load(sys.stdin)["counters"]
print("   ".join(r + " " + str(c[r]) for r in sys.argv[1:]))' "$@"
}

step "setup (scripts/setup.sh) and build"
./scripts/setup.sh
go build -o "$bin" ./cmd/xdpsec
echo "built $bin"

step "namespaces $ns_rx and $ns_tx, veth $if_rx <-> $if_tx"
ip netns add "$ns_rx"
ip netns add "$ns_tx"
ip -n "$ns_rx" link add "$if_rx" type veth peer name "$if_tx" netns "$ns_tx"
ip -n "$ns_rx" addr add 192.0.2.1/24 dev "$if_rx"
ip -n "$ns_tx" addr add 192.0.2.2/24 dev "$if_tx"
ip -n "$ns_rx" addr add 2001:db8::1/64 dev "$if_rx" nodad
ip -n "$ns_tx" addr add 2001:db8::2/64 dev "$if_tx" nodad
for ns in "$ns_rx" "$ns_tx"; do ip -n "$ns" link set lo up; done
ip -n "$ns_rx" link set "$if_rx" up
ip -n "$ns_tx" link set "$if_tx" up
mac_rx=$(ip netns exec "$ns_rx" cat "/sys/class/net/$if_rx/address")
echo "rx $if_rx 192.0.2.1 2001:db8::1 ($mac_rx)   tx $if_tx 192.0.2.2 2001:db8::2"

step "xdpsec attach --link $if_rx --nat-t-port 4501"
xdpsec_rx attach --link "$if_rx" --nat-t-port 4501
ip -n "$ns_rx" -d link show "$if_rx" | grep -o 'prog/xdp id [0-9]* name [a-z_]*'

step "traffic from $ns_tx, no SA programmed yet (28 crafted frames x 10)"
send 10
counters no-state steer-fallback pass-ike pass-keepalive malformed-esp pass-other

step "program the SAs: xdpsec attach --link $if_rx --sa SPEC ... (reuses the attachment)"
sa_args=()
while read -r spec; do
	echo "  $spec"
	sa_args+=(--sa "$spec")
done < <(/usr/bin/python3 tests/datapath/traffic.py sas)
xdpsec_rx attach --link "$if_rx" "${sa_args[@]}"

step "the same traffic again: known SPIs are steered, unknown ones stay no-state"
send 10
counters no-state steer-fallback state-mismatch

step "xdpsec status --link $if_rx"
xdpsec_rx status --link "$if_rx"

step "ping through the attached program"
ip netns exec "$ns_tx" ping -c 2 -i 0.2 -W 2 -q 192.0.2.1 | tail -2

step "xdpsec detach --link $if_rx"
xdpsec_rx detach --link "$if_rx"
if ip -n "$ns_rx" -d link show "$if_rx" | grep -q prog/xdp; then
	echo "datapath-demo.sh: the program is still attached after detach" >&2
	exit 1
fi
[ ! -e "/sys/fs/bpf/xdpsec/$if_rx" ] || { echo "datapath-demo.sh: pins left at /sys/fs/bpf/xdpsec/$if_rx" >&2; exit 1; }
echo "no XDP program on $if_rx, no pins under /sys/fs/bpf/xdpsec/$if_rx; removing the namespaces"
