#!/usr/bin/env bash
# setup.sh: install every Debian package xdpsec's build, tests, demo and
# profiling need. Idempotent: packages already present are not reinstalled,
# and apt-get update runs only when something is missing.
set -euo pipefail

packages=(
	clang-19 llvm-19 libbpf-dev   # regenerate the BPF objects (make generate)
	iproute2 ethtool               # namespaces, veth, XDP attach checks
	python3-scapy python3-cryptography  # independent IPsec peer
	tshark tcpdump                 # independent ESP dissector, captures
	iperf3                         # throughput through the tunnel
	linux-perf bpftool             # profiling, BPF inspection
	iputils-ping procps libcap2-bin make
)

if [ "$(id -u)" != 0 ]; then
	echo "setup.sh: run as root (it installs Debian packages with apt-get)" >&2
	exit 1
fi

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup.sh: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# tshark asks whether non-root users may capture; answer no.
	echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Go modules (and the bpf2go tool) into the module cache.
export PATH=$PATH:/usr/local/go/bin
cd "$(dirname "$0")/.."
go mod download
echo "setup.sh: ready ($(go version | cut -d' ' -f3), $(clang-19 --version | head -1))"
