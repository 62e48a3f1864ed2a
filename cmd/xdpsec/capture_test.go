package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/control"
	"github.com/xdpsec/xdpsec/internal/dropcap"
	"github.com/xdpsec/xdpsec/internal/pcap"
	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

// captureDaemon serves the capture op of dc on a fresh socket, as xdpsec
// run does.
func captureDaemon(t *testing.T, dc *dropcap.Capture) string {
	t.Helper()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	srv, err := control.Listen(filepath.Join(dir, "control.sock"))
	if err != nil {
		t.Fatal(err)
	}
	serveCapture(srv, dc)
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	return srv.Path()
}

// TestCaptureWritesWhatTheDaemonRecords runs `xdpsec capture` against a
// capture op while "workers" record drops: the file holds exactly the
// frames of the selected reason, byte for byte, and a second capture at the
// same time is refused with one line.
func TestCaptureWritesWhatTheDaemonRecords(t *testing.T) {
	dc := dropcap.New(dropcap.Config{Rate: 1000, Burst: 100})
	sock := captureDaemon(t, dc)
	file := filepath.Join(t.TempDir(), "d.pcap")

	var wg sync.WaitGroup
	stop, start := make(chan struct{}), make(chan struct{})
	wg.Add(1)
	go func() { // the workers: a replay and a bad-icv frame every 5 ms
		defer wg.Done()
		// Only once the second capture was answered: had the first one
		// already collected its 5 frames, the second would be accepted
		// (rightly) and the check below would mean nothing.
		select {
		case <-stop:
			return
		case <-start:
		}
		for i := 0; i < 2000; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			dc.Record(ipsec.VerdictReplay, []byte("replay-frame-"+string(rune('a'+i%26))))
			dc.Record(ipsec.VerdictBadICV, []byte("bad-icv-frame"))
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	// While the first capture runs, a second is refused.
	done := make(chan struct{})
	var code int
	var stdout, stderr string
	go func() {
		code, stdout, stderr = runCLI(t, "capture", "--reason", "replay", "-w", file, "--count", "5", "--duration", "10s", "--socket", sock)
		close(done)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for dc.Enabled() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// --duration: a wrongly accepted second capture ends instead of
	// hanging the test.
	c2, _, e2 := runCLI(t, "capture", "--reason", "all", "-w", filepath.Join(t.TempDir(), "x.pcap"), "--duration", "2s", "--socket", sock)
	close(start)
	if c2 != 1 || strings.Count(e2, "\n") != 1 || !strings.Contains(e2, "one capture at a time") {
		t.Errorf("second capture: exit %d, %q", c2, e2)
	}
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("xdpsec capture --count 5 did not end")
	}
	if code != 0 || !strings.Contains(stdout, "5 packet(s) written") {
		t.Fatalf("capture: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	r, err := pcap.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	n := 0
	for {
		p, err := r.Next()
		if err != nil {
			break
		}
		n++
		if !bytes.HasPrefix(p.Data, []byte("replay-frame-")) {
			t.Errorf("packet %d = %q, want a replay frame only", n, p.Data)
		}
	}
	if n != 5 || r.LinkType() != pcap.LinkTypeEthernet {
		t.Errorf("%d packets of link type %v, want 5 Ethernet", n, r.LinkType())
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("capture file mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	// The daemon notices the client left (its stream context ends).
	for deadline := time.Now().Add(5 * time.Second); dc.Enabled() != 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if dc.Enabled() != 0 {
		t.Error("the daemon's capture is still on 5 s after the client left")
	}
}
