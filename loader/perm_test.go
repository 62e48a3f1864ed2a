package loader

import (
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

// withoutCaps runs fn on an OS thread that has entered ns (if not nil) and
// then dropped every capability. Capabilities are per thread; the thread
// is never unlocked, so Go discards it when fn returns.
func withoutCaps(t *testing.T, ns *testutil.NS, fn func()) {
	t.Helper()
	withOnlyCaps(t, ns, nil, fn)
}

// withOnlyCaps is withoutCaps keeping the capabilities in keep (effective
// and permitted), as a service with CapabilityBoundingSet= would have them.
func withOnlyCaps(t *testing.T, ns *testutil.NS, keep []uint, fn func()) {
	t.Helper()
	done := make(chan string, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if ns != nil {
			if err := netns.Set(ns.Handle()); err != nil {
				done <- err.Error()
				return
			}
		}
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		for _, c := range keep {
			data[c/32].Effective |= 1 << (c % 32)
			data[c/32].Permitted |= 1 << (c % 32)
		}
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			done <- err.Error()
			return
		}
		fn()
		done <- ""
	}()
	if msg := <-done; msg != "" {
		t.Fatal(msg)
	}
}

func TestPermissionErrors(t *testing.T) {
	p := testutil.NewVethPair(t)
	opts := quietOptions(testPinRoot(t))
	detachAtEnd(t, p.A, p.IfA, opts)

	var classifyErr, attachErr error
	withoutCaps(t, nil, func() { _, classifyErr = NewClassifier() })
	withoutCaps(t, p.A, func() { _, attachErr = Attach(p.IfA, ModeAuto, opts) })
	for name, err := range map[string]error{"NewClassifier": classifyErr, "Attach": attachErr} {
		t.Logf("%s: %v", name, err)
		if !errors.Is(err, ErrPermission) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s without capabilities = %v, want one line wrapping ErrPermission", name, err)
		}
	}
	if id := xdpOn(t, p.A, p.IfA); id != 0 {
		t.Errorf("failed Attach left program %d", id)
	}
}

// TestLoadsWithoutPerfmon loads, attaches (native, pinned) and runs the
// program with CAP_BPF and CAP_NET_ADMIN alone, the set deploy/xdpsec.service
// grants for BPF. Without CAP_PERFMON the verifier refuses variable packet
// pointer arithmetic ("pointer arithmetic with it prohibited for !root") and
// "map value += register" whose bounds differ between paths; bpf/xdpsec.c is
// written to avoid both, and this test keeps it so.
func TestLoadsWithoutPerfmon(t *testing.T) {
	p := testutil.NewVethPair(t)
	opts := quietOptions(testPinRoot(t))
	detachAtEnd(t, p.A, p.IfA, opts)
	bpfNet := []uint{unix.CAP_BPF, unix.CAP_NET_ADMIN}

	var (
		attachErr, classifyErr error
		results                []Result
	)
	withOnlyCaps(t, p.A, bpfNet, func() {
		var d *Datapath
		if d, attachErr = Attach(p.IfA, ModeNative, opts); attachErr == nil {
			d.Close()
		}
	})
	withOnlyCaps(t, nil, bpfNet, func() {
		c, err := NewClassifier()
		if err != nil {
			classifyErr = err
			return
		}
		defer c.Close()
		for k, sa := range testSAs {
			if classifyErr = c.PutSA(k, sa); classifyErr != nil {
				return
			}
		}
		if classifyErr = c.SetConfig(testConfig()); classifyErr != nil {
			return
		}
		// One frame per shape that reads at a variable offset.
		hbh, dopt, rt := ext{typ: 0}, ext{typ: 60, len: 2}, ext{typ: 43, len: 1}
		for _, f := range [][]byte{
			v4{dst: dst4, proto: 50, payload: esp(0x1001, 64)}.frame(),
			v4{dst: dst4, proto: 50, options: 8, payload: esp(0x1001, 64)}.frame(),
			v6{dst: dst6, proto: 50, exts: []ext{hbh, dopt, {typ: 60, len: 8}}, payload: esp(0x1002, 64)}.frame(),
			v6{dst: dst6, proto: 50, exts: []ext{hbh, rt}, fragment: true, payload: esp(0x1002, 64)}.frame(),
			v4{dst: dst4, proto: 50, options: 40, payload: esp(0x1001, 64)}.frame(),
			v4{dst: dst4, proto: 51, payload: ah(50, 0x2001, 12, -1, esp(0x1001, 32))}.frame(),
		} {
			r, err := c.Classify(f)
			if err != nil {
				classifyErr = err
				return
			}
			results = append(results, r)
		}
	})
	if attachErr != nil {
		t.Fatalf("Attach with CAP_BPF+CAP_NET_ADMIN only: %+v", attachErr)
	}
	if id := xdpOn(t, p.A, p.IfA); id == 0 {
		t.Error("Attach returned nil but no program is on the link")
	}
	if classifyErr != nil {
		t.Fatalf("classify with CAP_BPF+CAP_NET_ADMIN only: %+v", classifyErr)
	}
	for i, r := range results {
		if r.Reason != ReasonSteerFallback || !r.Matched {
			t.Errorf("frame %d: %v, want steer-fallback on a matched SA", i, r)
		}
	}
}
