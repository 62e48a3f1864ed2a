package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/bpf"
)

// Default sizes of the maps Attach creates.
const (
	DefaultMaxSAs = 16384
	DefaultQueues = 256
)

type loadParams struct {
	pinDir     string // pin the persistent maps here ("" = no pinning)
	maxSAs     uint32
	queues     uint32
	recordLast bool // the classify variant
}

// pinnedMaps are the maps that outlive a process. xdpsec_lastpkt is only
// meaningful in the (never attached, never pinned) classify variant.
// MapLinkAddr came later than the others: pins of a build without it lack
// it (open tolerates that, see Maps.SetLinkAddr).
var pinnedMaps = []string{bpf.MapSAs, bpf.MapXSKs, bpf.MapConfig, bpf.MapCounters, bpf.MapLinkAddr}

func loadCollection(p loadParams) (*ebpf.Collection, error) {
	// No rlimit.RemoveMemlock: the program needs 5.18+ (bpf_xdp_load_bytes,
	// bpf_xdp_get_buff_len), and since 5.11 BPF memory is charged to the
	// memory cgroup, not RLIMIT_MEMLOCK. Its init-time probe also hid
	// ENOSYS from bpf(2) behind a formatted string.
	spec, err := bpf.LoadSpec()
	if err != nil {
		return nil, fmt.Errorf("read embedded xdpsec object: %w", err)
	}
	if p.maxSAs != 0 {
		spec.Maps[bpf.MapSAs].MaxEntries = p.maxSAs
	}
	if p.queues != 0 {
		spec.Maps[bpf.MapXSKs].MaxEntries = p.queues
	}
	if p.recordLast {
		if err := spec.Variables[bpf.VarRecordLast].Set(uint8(1)); err != nil {
			return nil, fmt.Errorf("enable classify recording: %w", err)
		}
	}
	opts := ebpf.CollectionOptions{}
	if p.pinDir != "" {
		for _, name := range pinnedMaps {
			spec.Maps[name].Pinning = ebpf.PinByName
		}
		opts.Maps.PinPath = p.pinDir
		if err := unpinOutgrownCounters(spec.Maps[bpf.MapCounters], p.pinDir); err != nil {
			return nil, err
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, opts)
	if err != nil {
		return nil, fmt.Errorf("load xdpsec program: %w", classifyLoadErr(err))
	}
	return coll, nil
}

// unpinOutgrownCounters removes a pinned reason-counter map that this
// build cannot use (an earlier build counted fewer reasons), so that
// loading pins a fresh one instead of failing with ErrMapIncompatible: an
// upgrade restarting over its pins keeps its SAs, XSK slots and config and
// only restarts the reason counters from 0 (a counter reset, which
// Prometheus handles). Every other map of another layout still fails.
func unpinOutgrownCounters(spec *ebpf.MapSpec, dir string) error {
	pin := filepath.Join(dir, bpf.MapCounters)
	m, err := ebpf.LoadPinnedMap(pin, nil)
	if err != nil {
		return nil // none pinned, or unreadable: loading will say
	}
	defer m.Close()
	if spec.Compatible(m) == nil {
		return nil
	}
	if err := os.Remove(pin); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("replace pinned reason counters of an earlier build (%d reasons, this build has %d): %w", m.MaxEntries(), spec.MaxEntries, err)
	}
	return nil
}

// helperProbe says whether XDP programs may call a helper on this kernel
// (a variable so that a test can stand in for an older kernel).
var helperProbe = features.HaveProgramHelper

// newestHelpers are the helpers the program calls that came last (Linux
// 5.18): on an older kernel the verifier's complaint about them is the
// whole story.
var newestHelpers = []struct {
	fn   asm.BuiltinFunc
	name string
}{{asm.FnXdpLoadBytes, "bpf_xdp_load_bytes"}, {asm.FnXdpGetBuffLen, "bpf_xdp_get_buff_len"}}

// missingHelper names a helper of newestHelpers this kernel lacks, if any.
func missingHelper() (string, bool) {
	for _, h := range newestHelpers {
		if errors.Is(helperProbe(ebpf.XDP, h.fn), ebpf.ErrNotSupported) {
			return h.name, true
		}
	}
	return "", false
}

// kernelRelease is uname -r.
func kernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

func classifyLoadErr(err error) error {
	var ve *ebpf.VerifierError
	switch {
	case errors.As(err, &ve):
		if h, ok := missingHelper(); ok {
			return fmt.Errorf("%w: kernel %s lacks the XDP helper %s that xdpsec needs (Linux 5.18 or later): %w", ErrNoBPF, kernelRelease(), h, err)
		}
		// One line (where the verifier gave up); the whole log stays
		// reachable with errors.As and %+v.
		return fmt.Errorf("verifier rejected the program: %w", err)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w: %w", ErrPermission, err)
	case errors.Is(err, unix.ENOSYS):
		// cilium/ebpf's feature probes (BTF first) meet it before any
		// load; some report it as ErrNotSupported, which also lands here.
		return fmt.Errorf("%w: %w", ErrNoBPF, noBPFSyscall(err))
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("%w: %w", ErrNoBPF, err)
	case errors.Is(err, ebpf.ErrMapIncompatible):
		return fmt.Errorf("pinned maps from another xdpsec version or size (run detach first): %w", err)
	}
	return err
}

// ObjectFeatures returns the packet shapes the embedded program handles, read
// from its .rodata (xdpsec_features). Datapath.Features reads the same from
// the program loaded in the kernel.
func ObjectFeatures() (Features, error) {
	spec, err := bpf.LoadSpec()
	if err != nil {
		return 0, fmt.Errorf("read embedded xdpsec object: %w", err)
	}
	var f uint32
	if err := spec.Variables[bpf.VarFeatures].Get(&f); err != nil {
		return 0, fmt.Errorf("read xdpsec_features: %w", err)
	}
	return Features(f), nil
}
