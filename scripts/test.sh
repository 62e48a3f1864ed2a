#!/usr/bin/env bash
# test.sh: set up a fresh Debian machine and run the whole xdpsec test suite
# as CI does: packages, BPF objects regenerated and compared with the
# committed ones, gofmt + go vet, every test (root: namespaces, XDP, AF_XDP),
# then a short run of every fuzz target.
#
#   FUZZTIME=10s  seconds per fuzz target (0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
FUZZTIME=${FUZZTIME:-8s}

./scripts/setup.sh

echo "== generated BPF objects match bpf/*.c"
make -s generate
if ! git diff --quiet -- bpf/; then
	git --no-pager diff --stat -- bpf/
	echo "test.sh: committed BPF objects differ from the C sources; run 'make generate' and commit" >&2
	exit 1
fi

echo "== lint"
make -s lint

echo "== tests"
go test -count=1 -timeout 20m ./...

if [ "$FUZZTIME" != 0 ]; then
	echo "== fuzz ($FUZZTIME per target)"
	for pkg in $(go list ./...); do
		for f in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
			echo "-- $pkg $f"
			log=$(mktemp)
			if ! go test -run '^$' -fuzz "^$f\$" -fuzztime "$FUZZTIME" "$pkg" >"$log" 2>&1; then
				cat "$log"
				rm -f "$log"
				echo "test.sh: fuzz target $f in $pkg failed; a crasher, if any, is under its testdata/fuzz/$f" >&2
				exit 1
			fi
			tail -n 1 "$log"
			rm -f "$log"
		done
	done
fi
echo "test.sh: all checks passed"
