//go:build linux

package caps_test

import (
	"bufio"
	"encoding/json"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

// TestDaemonWatchSeesLinkEvents runs `xdpsec caps --watch -j` against a
// real daemon and changes the protected link under it: the daemon's hub
// must report the MTU change and the link going down and up, in order and
// with increasing sequence numbers (NDIS_STATUS_TASK_OFFLOAD_CURRENT_CONFIG),
// and SIGTERM must reach the watcher as engine-stop before the socket goes.
func TestDaemonWatchSeesLinkEvents(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	d := startOperatorDaemon(t, p)

	watch := d.Command("caps", "--watch", "-j", "--count", "5")
	out, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { watch.Process.Kill(); watch.Wait() })

	type event struct {
		Seq    uint64 `json:"seq"`
		Reason string `json:"reason"`
	}
	events := make(chan event, 8)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var e event
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				events <- e
			}
		}
	}()
	next := func(what string) event {
		t.Helper()
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatalf("watch ended before %s; daemon log:\n%s", what, d.Log())
			}
			return e
		case <-time.After(10 * time.Second):
			t.Fatalf("no event for %s within 10 s; daemon log:\n%s", what, d.Log())
		}
		return event{}
	}

	first := next("the current state") // the stream starts with the latest change
	p.A.MustRun(t, "ip", "link", "set", p.IfA, "mtu", "1400")
	mtu := next("the MTU change")
	p.A.MustRun(t, "ip", "link", "set", p.IfA, "down")
	down := next("link down")
	p.A.MustRun(t, "ip", "link", "set", p.IfA, "up")
	up := next("link up")
	d.Stop() // SIGTERM
	stop := next("engine stop")

	want := []struct {
		e      event
		reason string
	}{{mtu, "mtu-change"}, {down, "link-down"}, {up, "link-up"}, {stop, "engine-stop"}}
	prev := first.Seq
	for _, w := range want {
		if w.e.Reason != w.reason {
			t.Errorf("event %+v, want reason %s", w.e, w.reason)
		}
		if w.e.Seq <= prev {
			t.Errorf("event %+v: sequence not increasing after %d", w.e, prev)
		}
		prev = w.e.Seq
	}
}
