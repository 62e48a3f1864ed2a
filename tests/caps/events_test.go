//go:build linux

package caps_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/capabilities"
	"github.com/xdpsec/xdpsec/capabilities/probe"
	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/internal/testutil/xdpsectest"
	"github.com/xdpsec/xdpsec/loader"
)

// watchChildEnv makes TestWatchChild act; it is the child of
// TestWatchEmitsQueueChangeAndXDPFallback.
const watchChildEnv = "XDPSEC_CAPS_WATCH_CHILD"

// watchEvent is one change as TestWatchChild prints it.
type watchEvent struct {
	Seq      uint64 `json:"seq"`
	Reason   string `json:"reason"`
	Detail   string `json:"detail"`
	XDPMode  string `json:"xdpMode"`
	RxQueues int    `json:"rxQueues"`
}

// TestWatchChild does what `xdpsec caps --local --link L --watch` does —
// probe the attached datapath, follow the link's netlink events — with the
// pin root the parent gives, and prints each change as a JSON line. It runs
// under `ip netns exec`, whose sysfs is the namespace's: the receive queue
// count comes from /sys/class/net/L/queues, which netlink does not report
// (IFLA_NUM_RX_QUEUES is the allocated maximum, not the queues in use).
func TestWatchChild(t *testing.T) {
	if os.Getenv(watchChildEnv) == "" {
		t.Skip("helper of TestWatchEmitsQueueChangeAndXDPFallback")
	}
	link, pin := os.Getenv("XDPSEC_LINK"), os.Getenv("XDPSEC_PIN_ROOT")
	st, err := probe.Local(probe.LocalOptions{Link: link, PinRoot: pin})
	if err != nil {
		fmt.Println("probe:", err)
		os.Exit(3)
	}
	hub := capabilities.NewHub(st)
	sub := hub.Subscribe(16)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := capabilities.WatchLink(ctx, hub, link, nil)
	if err != nil {
		fmt.Println("watch:", err)
		os.Exit(3)
	}
	defer w.Stop()
	enc := json.NewEncoder(os.Stdout)
	for {
		select {
		case c := <-sub.C:
			ev := watchEvent{Seq: c.Seq, Reason: c.Reason.String(), Detail: c.Detail, XDPMode: string(c.State.Linux.XDPMode)}
			if l := c.State.Linux.Link; l != nil {
				ev.RxQueues = l.RxQueues
			}
			enc.Encode(ev)
		case <-ctx.Done():
			os.Exit(0) // the parent stops reading before this
		case <-w.Done():
			fmt.Println("watch ended:", w.Err())
			os.Exit(3)
		}
	}
}

// TestWatchEmitsQueueChangeAndXDPFallback: a change of the link's receive
// queue count (ethtool -L on a veth, which the kernel allows at run time)
// is a queue-change, and the XDP program leaving the mode it was probed in
// is an xdp-fallback: detached (native -> detached), then attached again
// in generic mode (detached -> generic), as an operator falling back from
// native would.
func TestWatchEmitsQueueChangeAndXDPFallback(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	// `ip netns exec` hides /sys/fs/bpf: the pins live on a bpffs of the
	// test's own, which the child's mount namespace sees.
	pin := xdpsectest.MountBPFFS(t)
	opts := loader.Options{PinRoot: pin, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	attach := func(m loader.Mode) {
		t.Helper()
		if err := p.A.Do(func() error {
			d, err := loader.Attach(p.IfA, m, opts)
			if err == nil {
				d.Close()
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { p.A.Do(func() error { return loader.Detach(p.IfA, opts) }) })
	attach(loader.ModeNative)

	cmd := p.A.Command(os.Args[0], "-test.run=^TestWatchChild$")
	cmd.Env = append(os.Environ(), watchChildEnv+"=1", "XDPSEC_LINK="+p.IfA, "XDPSEC_PIN_ROOT="+pin)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill() // our child, by PID
		cmd.Wait()
	})
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func(want string) watchEvent {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("watch child ended before %s", want)
			}
			var ev watchEvent
			if err := json.Unmarshal([]byte(l), &ev); err != nil {
				t.Fatalf("watch child said %q", l)
			}
			t.Logf("seq %d %s %q (xdp %q, rx queues %d)", ev.Seq, ev.Reason, ev.Detail, ev.XDPMode, ev.RxQueues)
			if ev.Reason != want {
				t.Fatalf("event %d is %s %q, want %s", ev.Seq, ev.Reason, ev.Detail, want)
			}
			return ev
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s event within 5 s", want)
		}
		return watchEvent{}
	}

	first := next("probe")
	if first.XDPMode != "native" || first.RxQueues != 1 {
		t.Fatalf("probe: xdp %q, rx queues %d; want native, 1", first.XDPMode, first.RxQueues)
	}

	p.A.MustRun(t, "ethtool", "-L", p.IfA, "rx", "2")
	if ev := next("queue-change"); ev.RxQueues != 2 || ev.Detail != p.IfA+" rx queues 1 -> 2" {
		t.Errorf("queue-change: %q, rx queues %d", ev.Detail, ev.RxQueues)
	}

	if err := p.A.Do(func() error { return loader.Detach(p.IfA, opts) }); err != nil {
		t.Fatal(err)
	}
	if ev := next("xdp-fallback"); ev.XDPMode != "" || ev.Detail != p.IfA+": XDP native -> detached" {
		t.Errorf("detach: %q, xdp %q", ev.Detail, ev.XDPMode)
	}
	attach(loader.ModeGeneric)
	if ev := next("xdp-fallback"); ev.XDPMode != "generic" || ev.Detail != p.IfA+": XDP detached -> generic" {
		t.Errorf("generic attach: %q, xdp %q", ev.Detail, ev.XDPMode)
	}
}
