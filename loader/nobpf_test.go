package loader

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

// noBPFChildEnv makes TestNoBPFChild act: it is the child of
// TestKernelWithoutBPF, not a test of its own.
const noBPFChildEnv = "XDPSEC_LOADER_NOBPF_PIN_ROOT"

// denyBPFSyscall makes bpf(2) fail with ENOSYS in every thread of this
// process, as on a kernel built without CONFIG_BPF_SYSCALL.
func denyBPFSyscall() error {
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_BPF, Jt: 0, Jf: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	// TSYNC: the Go runtime's other threads get the filter too.
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog))); errno != 0 {
		return fmt.Errorf("seccomp: %w", errno)
	}
	return nil
}

// TestNoBPFChild is the child of TestKernelWithoutBPF: with bpf(2) denied
// it calls every loader entry point that needs BPF and prints one line per
// call: "NAME nobpf|other ERROR". The parent has attached xdpsec to "lo"
// (in the child's namespace, pinned under the root it passes), so Open and
// Detach meet pinned objects they cannot open; the veth "d0" has
// nothing, so Attach-new takes the load path.
func TestNoBPFChild(t *testing.T) {
	root := os.Getenv(noBPFChildEnv)
	if root == "" {
		t.Skip("helper of TestKernelWithoutBPF")
	}
	if err := denyBPFSyscall(); err != nil {
		fmt.Println("setup", err)
		os.Exit(3)
	}
	opts := quietOptions(root)
	calls := []struct {
		name string
		fn   func() error
	}{
		{"NewClassifier", func() error { _, err := NewClassifier(); return err }},
		{"Attach", func() error { _, err := Attach("lo", ModeGeneric, opts); return err }},
		{"Attach-new", func() error { _, err := Attach("d0", ModeAuto, quietOptions(root+"-fresh")); return err }},
		{"Open", func() error { _, err := Open("lo", opts); return err }},
		{"Detach", func() error { return Detach("lo", opts) }},
	}
	for _, c := range calls {
		err := c.fn()
		kind := "other"
		if errors.Is(err, ErrNoBPF) {
			kind = "nobpf"
		}
		fmt.Printf("%s %s %v\n", c.name, kind, strings.ReplaceAll(fmt.Sprint(err), "\n", " "))
	}
	os.Exit(0)
}

// TestKernelWithoutBPF: where bpf(2) is ENOSYS (no CONFIG_BPF_SYSCALL, or a
// seccomp filter), the loader's errors wrap ErrNoBPF so that callers can
// say "this kernel has no BPF" instead of a raw errno, and nothing already
// attached is lost (Detach must not drop pins it cannot inspect).
func TestKernelWithoutBPF(t *testing.T) {
	ns := testutil.NewNS(t, "nobpf")
	root := testPinRoot(t)
	opts := quietOptions(root)
	err := ns.Do(func() error {
		d, err := Attach("lo", ModeGeneric, opts)
		if err == nil {
			d.Close()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	detachAtEnd(t, ns, "lo", opts)
	ns.MustRun(t, "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1")
	before := xdpOn(t, ns, "lo")
	// nsenter --net: the child's loopback is the namespace's; /sys/fs/bpf
	// stays the host's bpffs.
	cmd := exec.Command("nsenter", "--net=/run/netns/"+ns.Name, "--", os.Args[0], "-test.run=^TestNoBPFChild$")
	cmd.Env = append(os.Environ(), noBPFChildEnv+"="+root)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.SplitN(line, " ", 3)
		if len(f) < 3 || (f[1] != "nobpf" && f[1] != "other") {
			continue
		}
		seen++
		t.Logf("%s: %s", f[0], f[2])
		if f[1] != "nobpf" {
			t.Errorf("%s with bpf(2) = ENOSYS: %s; want an error wrapping ErrNoBPF", f[0], f[2])
		}
	}
	if seen != 5 {
		t.Fatalf("child printed %d results, want 5:\n%s", seen, out)
	}
	if after := xdpOn(t, ns, "lo"); after != before || after == 0 {
		t.Errorf("program on lo went from %d to %d", before, after)
	}
	if _, err := os.Stat(root + "/lo/" + pinLink); err != nil {
		t.Errorf("the child's failed calls removed a pin: %v", err)
	}
	if _, err := os.Stat(root + "-fresh"); err == nil {
		t.Errorf("failed Attach left %s-fresh behind", root)
		os.RemoveAll(root + "-fresh")
	}
}
