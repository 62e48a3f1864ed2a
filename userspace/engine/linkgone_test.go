package engine

import (
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

// TestLinkDeletedIsReported: deleting the engine's link (its XDP program
// and AF_XDP sockets go with it) is reported once on Gone, naming the link,
// and Stop still takes everything else down: the TUN, the workers, the
// goroutines.
func TestLinkDeletedIsReported(t *testing.T) {
	testutil.RequireRoot(t)
	goroutines := runtime.NumGoroutine()
	p := testutil.NewVethPair(t)
	e := startFromConfig(t, p.A, tunnelConfig(true, p.IfA, mountBPFFS(t)))
	select {
	case err := <-e.Gone():
		t.Fatalf("Gone before any link was deleted: %v", err)
	default:
	}
	p.A.MustRun(t, "ip", "link", "del", p.IfA)
	select {
	case err := <-e.Gone():
		if !errors.Is(err, ErrLinkGone) || !strings.Contains(err.Error(), p.IfA) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Gone: %v, want one line wrapping ErrLinkGone naming %s", err, p.IfA)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("deleting the link was not reported on Gone within 10 s")
	}
	done := make(chan error, 1)
	go func() { done <- e.Stop() }()
	select {
	case err := <-done:
		t.Logf("Stop after the link went: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("Stop hangs after the link was deleted")
	}
	if out := p.A.MustRun(t, "ip", "-o", "link", "show"); strings.Contains(out, DefaultTUN) {
		t.Errorf("the TUN outlived Stop:\n%s", out)
	}
	checkGoroutines(t, goroutines)
}
