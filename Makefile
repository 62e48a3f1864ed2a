# xdpsec developer targets. Everything runs as root on Debian; see README.md.
GO      ?= go
CLANG   ?= clang-19
BENCHTIME ?= 1s

# staticcheck runs at a pinned version (go run fetches it; nothing in go.mod).
STATICCHECK ?= v0.8.2

.PHONY: all build generate test bench lint fuzz demo datapath-demo setup clean

all: build

build:
	$(GO) build -o xdpsec ./cmd/xdpsec

# Regenerate the bpf2go bindings (.o and _bpfel.go, committed) from bpf/*.c.
generate:
	cd bpf && BPF2GO_CC=$(CLANG) BPF2GO_STRIP=llvm-strip-19 $(GO) generate ./...

test:
	$(GO) test -count=1 ./...

# Benchmarks report ratios measured in the same run; see BENCHMARKS.md.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK) ./...

# Every fuzz target for FUZZTIME each (after the whole suite, as CI does).
fuzz:
	FUZZTIME=$${FUZZTIME:-30s} ./scripts/test.sh

setup:
	./scripts/setup.sh

# The README's first command: setup, then the two-namespace tunnel demo.
demo:
	./scripts/demo.sh

# The XDP classifier alone: attach, generated traffic, counters by reason.
datapath-demo:
	./scripts/datapath-demo.sh

clean:
	rm -f xdpsec
