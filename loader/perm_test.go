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
