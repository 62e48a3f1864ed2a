package loader

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

// On a kernel older than 5.18 the verifier refuses the program because two
// helpers are unknown; the error must say that in one line (the kernel is
// too old, which helper, which release), not just "verifier rejected".
// The probe stands in for such a kernel; the verifier error is the one
// such a kernel gives.
func TestOldKernelErrorNamesTheMissingHelper(t *testing.T) {
	testutil.RequireRoot(t) // the real probe below loads a program
	verr := &ebpf.VerifierError{Cause: unix.EINVAL, Log: []string{"0: R1=ctx() R10=fp0", "; return (__u32)bpf_xdp_get_buff_len(ctx);", "unknown func bpf_xdp_get_buff_len#188"}}
	wrapped := fmt.Errorf("program xdpsec_classify: load program: %w", verr)

	real := helperProbe
	t.Cleanup(func() { helperProbe = real })
	helperProbe = func(pt ebpf.ProgramType, h asm.BuiltinFunc) error {
		if h == asm.FnXdpGetBuffLen {
			return fmt.Errorf("%s: %w", h, ebpf.ErrNotSupported)
		}
		return real(pt, h)
	}
	err := classifyLoadErr(wrapped)
	msg := err.Error()
	if !errors.Is(err, ErrNoBPF) || !strings.Contains(msg, "5.18") || !strings.Contains(msg, "lacks the XDP helper bpf_xdp_get_buff_len") ||
		!strings.Contains(msg, kernelRelease()) || strings.Contains(msg, "\n") {
		t.Errorf("old kernel: %v, want one line wrapping ErrNoBPF naming the helper, the release and 5.18", err)
	}
	var ve *ebpf.VerifierError
	if !errors.As(err, &ve) {
		t.Error("the verifier log is no longer reachable with errors.As")
	}

	// This kernel has both helpers: a verifier error stays one.
	helperProbe = real
	if err := classifyLoadErr(wrapped); errors.Is(err, ErrNoBPF) || !strings.HasPrefix(err.Error(), "verifier rejected the program") {
		t.Errorf("current kernel: %v, want a plain verifier rejection", err)
	}
}
