package xdpsectest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

func TestMain(m *testing.M) { Main(m) }

func TestWriteConfigModes(t *testing.T) {
	dir := t.TempDir()
	c := WriteConfig(t, dir, "a", []string{"link veth0", "keys a.keys"}, []string{"ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1 mode tunnel aead 'rfc4106(gcm(aes))' 0x0102 128"})
	if c.Path != filepath.Join(dir, "a.conf") || c.Keys != filepath.Join(dir, "a.keys") || c.Socket != filepath.Join(dir, "run", "control.sock") {
		t.Errorf("WriteConfig = %+v", c)
	}
	for _, f := range []string{c.Path, c.Keys} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	b, _ := os.ReadFile(c.Path)
	if string(b) != "link veth0\nkeys a.keys\n" {
		t.Errorf("config holds %q", b)
	}
	if c := WriteConfig(t, dir, "b", []string{"link veth0"}, nil); c.Keys != "" {
		t.Errorf("WriteConfig without keys names a key file %q", c.Keys)
	}
	if _, err := os.Stat(filepath.Join(dir, "b.keys")); !os.IsNotExist(err) {
		t.Errorf("WriteConfig without keys wrote b.keys (%v)", err)
	}
}

func TestReadExample(t *testing.T) {
	lines := ReadExample(t, "tunnel-a.conf")
	if !slices.Contains(lines, "keys tunnel-a.keys") || lines[len(lines)-1] == "" {
		t.Errorf("examples/tunnel-a.conf read as %q", lines)
	}
}

// TestLogBufferConcurrent: writers and a reader at once (run with -race)
// lose nothing.
func TestLogBufferConcurrent(t *testing.T) {
	var l LogBuffer
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				fmt.Fprintf(&l, "w%d\n", i)
			}
		}()
	}
	for range 10 {
		_ = l.String()
	}
	wg.Wait()
	if n := strings.Count(l.String(), "\n"); n != 400 {
		t.Errorf("%d lines, want 400", n)
	}
}

// daemonConfig is a one-link daemon in A of p with one inbound ESP SA inline
// (test key, never real).
func daemonConfig(t *testing.T, p *testutil.VethPair) Config {
	return WriteConfig(t, t.TempDir(), "x", []string{
		"link " + p.IfA,
		"tun xdpsec0",
		"address 198.51.100.1/32",
		"pin " + MountBPFFS(t),
		fmt.Sprintf("ip xfrm state add src %s dst %s proto esp spi 0x1002 mode tunnel aead 'rfc4106(gcm(aes))' 0x%s 128", p.IPv4B, p.IPv4A, strings.Repeat("a5", 20)),
	}, nil)
}

// TestDaemonLifecycle starts a real daemon, reads its stats and log, kills
// and restarts it, and stops it with SIGTERM: it exits 0 and takes its XDP
// program with it.
func TestDaemonLifecycle(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	logFile := filepath.Join(t.TempDir(), "daemon.log")
	d := StartDaemon(t, p.A, daemonConfig(t, p), Options{Env: []string{"XDPSECTEST=1"}, LogFile: logFile})
	st := d.Stats()
	if len(st.Links) != 1 || st.Links[0].Name != p.IfA {
		t.Errorf("stats -j links %+v, want one, %s", st.Links, p.IfA)
	}
	if s := SAStats(st, "esp spi 0x00001002 dst 192.0.2.1"); s.Key == "" {
		t.Errorf("stats -j has no SA esp 0x1002: %+v", st.SAs)
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", d.PID()))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(env), "XDPSECTEST=1\x00") {
		t.Errorf("daemon environment lacks XDPSECTEST=1")
	}
	if out, err := d.CLI("sa", "get", "src", "192.0.2.9", "dst", "192.0.2.1", "proto", "esp", "spi", "0x9"); err == nil {
		t.Errorf("sa get of a missing SA succeeded: %s", out)
	}
	if !strings.Contains(d.Log(), "level=") {
		t.Errorf("log file holds no log line:\n%s", d.Log())
	}

	d.Kill()
	if err := d.Signal(syscall.SIGHUP); err != ErrNotRunning {
		t.Errorf("Signal after Kill: %v, want ErrNotRunning", err)
	}
	if !strings.Contains(p.A.MustRun(t, "ip", "link", "show", p.IfA), "prog/xdp") {
		t.Errorf("XDP gone after SIGKILL (want it pinned)")
	}
	d.Restart()
	d.Stats()
	if !d.Stop() {
		t.Fatalf("Stop did not stop the restarted daemon with SIGTERM:\n%s", d.Log())
	}
	if err := d.ExitErr(); err != nil {
		t.Errorf("exit after SIGTERM: %v\n%s", err, d.Log())
	}
	if d.Stop() {
		t.Errorf("second Stop claims to have stopped a daemon")
	}
	if out := p.A.MustRun(t, "ip", "link", "show", p.IfA); strings.Contains(out, "prog/xdp") {
		t.Errorf("XDP left after SIGTERM:\n%s", out)
	}
}

// TestLaunchDaemonBadConfig: a daemon that cannot start exits non-zero with
// its error on stderr, and Wait sees it.
func TestLaunchDaemonBadConfig(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t, "bad")
	c := WriteConfig(t, t.TempDir(), "bad", []string{"link no-such-link0", "tun xdpsec0"}, nil)
	d := LaunchDaemon(t, ns, c, Options{})
	if !d.Wait(15 * time.Second) {
		t.Fatalf("daemon with a missing link still runs after 15 s:\n%s", d.Log())
	}
	if d.ExitErr() == nil {
		t.Errorf("daemon with a missing link exited 0")
	}
	if !strings.Contains(d.Stderr(), "no-such-link0") || d.Stdout() != "" && !strings.Contains(d.Log(), d.Stdout()) {
		t.Errorf("stderr does not name the missing link:\nstderr %q\nstdout %q", d.Stderr(), d.Stdout())
	}
}
