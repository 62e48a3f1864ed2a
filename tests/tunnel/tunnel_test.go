// Package tunnel runs the built xdpsec binary as a daemon in two network
// namespaces joined by a veth, with the shipped example configs, and sends
// ping, TCP and UDP through the ESP tunnel between them.
package tunnel

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/loader"
	"github.com/xdpsec/xdpsec/userspace/engine"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// xdpsecBinary builds cmd/xdpsec once per test binary.
func xdpsecBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "xdpsec-tunnel-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "xdpsec")
		out, err := exec.Command("go", "build", "-o", binPath, "../../cmd/xdpsec").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// daemon is one running `xdpsec run`.
type daemon struct {
	t      *testing.T
	bin    string
	ns     *testutil.NS
	conf   string
	socket string
	cmd    *exec.Cmd
	out    *logBuffer
	done   chan struct{}
}

// logBuffer collects a daemon's output; tests read it while the daemon
// writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// mountBPFFS gives the test a bpffs of its own for the pins: visible from
// the daemons' `ip netns exec` mount namespaces (which hide /sys/fs/bpf)
// and outliving a killed daemon, as fail-open needs.
func mountBPFFS(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs on %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// exampleConfig copies examples/tunnel-SIDE.{conf,keys} into a fresh
// directory (the key file chmod 600, as xdpsec demands) and appends extra
// lines to the config.
func exampleConfig(t *testing.T, side string, extra ...string) (conf, socket string) {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"tunnel-" + side + ".conf", "tunnel-" + side + ".keys"} {
		b, err := os.ReadFile(filepath.Join("../../examples", f))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(f, ".conf") {
			b = append(b, []byte("\n"+strings.Join(extra, "\n")+"\n")...)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "tunnel-"+side+".conf"), filepath.Join(dir, "run", "control.sock")
}

func startDaemon(t *testing.T, ns *testutil.NS, conf, socket string) *daemon {
	t.Helper()
	d := &daemon{t: t, bin: xdpsecBinary(t), ns: ns, conf: conf, socket: socket}
	d.start()
	t.Cleanup(d.stop)
	return d
}

func (d *daemon) start() {
	d.t.Helper()
	d.out = &logBuffer{}
	d.cmd = d.ns.Command(d.bin, "run", "--config", d.conf, "--socket", d.socket)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.done = make(chan struct{})
	go func() { d.cmd.Wait(); close(d.done) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := d.ns.Run(d.bin, "stats", "--socket", d.socket); err == nil {
			return
		}
		select {
		case <-d.done:
			d.t.Fatalf("xdpsec run exited at start:\n%s", d.out)
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("xdpsec run not answering on %s after 15 s:\n%s", d.socket, d.out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop sends SIGTERM to the daemon's PID and waits (bounded), then SIGKILL.
func (d *daemon) stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		d.t.Errorf("xdpsec run (pid %d) ignored SIGTERM for 10 s; killing it\n%s", d.cmd.Process.Pid, d.out)
		d.cmd.Process.Kill()
		<-d.done
	}
}

func (d *daemon) kill() {
	d.cmd.Process.Kill()
	<-d.done
}

func (d *daemon) stats() engine.Stats {
	d.t.Helper()
	out, err := d.ns.Run(d.bin, "stats", "-j", "--socket", d.socket)
	if err != nil {
		d.t.Fatal(err)
	}
	var st engine.Stats
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		d.t.Fatalf("stats -j: %v\n%s", err, out)
	}
	return st
}

func saStats(st engine.Stats, key string) engine.SAStats {
	for _, s := range st.SAs {
		if s.Key == key {
			return s
		}
	}
	return engine.SAStats{}
}

// ping sends n echo requests; on loss it fails the test with every
// daemon's counters.
func ping(t *testing.T, ns *testutil.NS, dst string, n int, ds ...*daemon) {
	t.Helper()
	// -w: keep sending until n replies came back or 10 s passed (the
	// first request may find the next hop still unresolved).
	out, err := ns.Run("ping", "-c", fmt.Sprint(n), "-i", "0.1", "-w", "10", dst)
	if err != nil || !strings.Contains(out, fmt.Sprintf("%d received", n)) {
		t.Fatalf("ping %s from %s: %v\n%s%s", dst, ns.Name, err, out, dump(ds...))
	}
}

// dump renders the daemons' text stats and logs, for failure messages.
func dump(ds ...*daemon) string {
	var b strings.Builder
	for _, d := range ds {
		st, _ := d.ns.Run(d.bin, "stats", "--socket", d.socket)
		fmt.Fprintf(&b, "\n--- %s stats:\n%s--- log:\n%s", d.ns.Name, st, d.out)
	}
	return b.String()
}

func checkNoLeaks(t *testing.T, names []string) {
	t.Helper()
	for _, n := range names {
		if slices.Contains(testutil.Leaked(), n) {
			t.Errorf("namespace %s left behind", n)
		}
	}
}

func TestTunnelTraffic(t *testing.T) {
	testutil.RequireRoot(t)
	var names []string
	t.Run("aes-gcm-128-tunnel", func(t *testing.T) {
		p := testutil.NewVethPair(t)
		names = []string{p.A.Name, p.B.Name}
		pin := mountBPFFS(t)
		confA, sockA := exampleConfig(t, "a", "pin "+pin)
		confB, sockB := exampleConfig(t, "b", "pin "+pin)
		a := startDaemon(t, p.A, confA, sockA)
		b := startDaemon(t, p.B, confB, sockB)

		ping(t, p.A, "198.51.100.2", 3, a, b)
		ping(t, p.B, "198.51.100.1", 3, a, b)
		ping(t, p.A, "2001:db8:b::1", 3, a, b)
		ping(t, p.B, "2001:db8:a::1", 3, a, b)

		// TCP: 2 MiB from A to B, checked by hash.
		tcpTransfer(t, p, "198.51.100.2", 2<<20)
		tcpTransfer(t, p, "[2001:db8:b::1]", 1<<20)

		// UDP, counted exactly: the deltas of A's outbound and B's
		// inbound counters equal the datagrams sent.
		const n = 200
		a0, b0 := a.stats(), b.stats()
		got := udpBurst(t, p, "198.51.100.2:4789", n)
		a1, b1 := a.stats(), b.stats()
		if got != n {
			t.Errorf("UDP: %d of %d datagrams arrived%s", got, n, dump(a, b))
		}
		if d := a1.Counters["out-protected"] - a0.Counters["out-protected"]; d != n {
			t.Errorf("A out-protected grew by %d, want %d", d, n)
		}
		if d := b1.Counters["in-delivered"] - b0.Counters["in-delivered"]; d != n {
			t.Errorf("B in-delivered grew by %d, want %d", d, n)
		}
		key := "esp spi 0x00001001 dst 192.0.2.2"
		sa0, sa1 := saStats(b0, key), saStats(b1, key)
		if sa1.Key == "" {
			t.Fatalf("B has no SA %q: %+v", key, b1.SAs)
		}
		if d := sa1.Packets - sa0.Packets; d != n {
			t.Errorf("B SA %s packets grew by %d, want %d", key, d, n)
		}
		if d := sa1.XDPPackets - sa0.XDPPackets; d != n {
			t.Errorf("B XDP matched %d packets of SA %s, want %d", d, key, n)
		}
		if d := b1.Links[0].Reasons["steered"] - b0.Links[0].Reasons["steered"]; d != n {
			t.Errorf("B XDP steered %d, want %d", d, n)
		}
		for _, st := range []engine.Stats{a1, b1} {
			for _, bad := range []string{"bad-icv", "replay", "malformed", "no-state"} {
				if st.InVerdicts[bad] != 0 {
					t.Errorf("inbound %s = %d, want 0", bad, st.InVerdicts[bad])
				}
			}
		}
		// Text stats and sa list never show keys.
		for _, args := range [][]string{{"stats"}, {"sa", "list"}, {"sa", "list", "-j"}} {
			out := a.ns.MustRun(t, a.bin, append(args, "--socket", a.socket)...)
			if strings.Contains(out, "0102030405") || strings.Contains(out, "2122232425") {
				t.Errorf("xdpsec %v printed key bytes:\n%s", args, out)
			}
		}
	})
	checkNoLeaks(t, names)
}

// tcpTransfer sends size random bytes from A to B's addr over TCP and checks
// they arrive whole.
func tcpTransfer(t *testing.T, p *testutil.VethPair, addr string, size int) {
	t.Helper()
	var ln net.Listener
	if err := p.B.Do(func() (err error) { ln, err = net.Listen("tcp", addr+":5201"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	data := make([]byte, size)
	rand.Read(data)
	want := sha256.Sum256(data)
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			res <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		res <- r
	}()
	var c net.Conn
	if err := p.A.Do(func() (err error) { c, err = net.DialTimeout("tcp", addr+":5201", 5*time.Second); return }); err != nil {
		t.Fatalf("dial %s through the tunnel: %v", addr, err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(data); err != nil {
		t.Fatalf("TCP write to %s: %v", addr, err)
	}
	c.Close()
	r := <-res
	if r.err != nil || r.n != int64(size) || r.sum != want {
		t.Fatalf("TCP to %s: got %d of %d bytes, hash match %v, err %v", addr, r.n, size, r.sum == want, r.err)
	}
}

// udpBurst sends n datagrams from A to B's addr, paced, and returns how
// many arrived.
func udpBurst(t *testing.T, p *testutil.VethPair, addr string, n int) int {
	t.Helper()
	var rc *net.UDPConn
	if err := p.B.Do(func() error {
		ua, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return err
		}
		rc, err = net.ListenUDP("udp", ua)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	// Room for the whole burst: on two busy cores the reader may not run
	// for a while, and the default buffer holds fewer than 100 datagrams.
	rc.SetReadBuffer(4 << 20)
	var sc net.Conn
	if err := p.A.Do(func() (err error) { sc, err = net.Dial("udp", addr); return }); err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	// Receive while sending: the socket buffer holds fewer than n
	// datagrams.
	got := make(chan int, 1)
	go func() {
		k := 0
		buf := make([]byte, 2048)
		for k < n {
			rc.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := rc.Read(buf); err != nil {
				break
			}
			k++
		}
		got <- k
	}()
	msg := make([]byte, 1000)
	for i := 0; i < n; i++ {
		if _, err := sc.Write(msg); err != nil {
			t.Fatalf("UDP send %d: %v", i, err)
		}
		if i%20 == 19 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	return <-got
}

func TestFailOpenAfterSIGKILL(t *testing.T) {
	testutil.RequireRoot(t)
	var names []string
	t.Run("sigkill", func(t *testing.T) {
		p := testutil.NewVethPair(t)
		names = []string{p.A.Name, p.B.Name}
		pin := mountBPFFS(t)
		confA, sockA := exampleConfig(t, "a", "pin "+pin, "fail-open")
		confB, sockB := exampleConfig(t, "b", "pin "+pin, "fail-open")
		a := startDaemon(t, p.A, confA, sockA)
		b := startDaemon(t, p.B, confB, sockB)
		t.Cleanup(func() {
			p.A.Do(func() error { return loader.Detach(p.IfA, loader.Options{PinRoot: pin}) })
			p.B.Do(func() error { return loader.Detach(p.IfB, loader.Options{PinRoot: pin}) })
		})
		ping(t, p.A, "198.51.100.2", 2, a, b)

		// Ping from B while A's daemon dies.
		pinger := p.B.Command("ping", "-c", "20", "-i", "0.05", "198.51.100.1")
		if err := pinger.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		a.kill()
		pinger.Wait() // fails: A cannot answer without its daemon

		if out := p.A.MustRun(t, "ip", "link", "show", p.IfA); !strings.Contains(out, "prog/xdp") {
			t.Fatalf("XDP program gone after SIGKILL (want it pinned):\n%s", out)
		}
		var fallback uint64
		err := p.A.Do(func() error {
			d, err := loader.Open(p.IfA, loader.Options{PinRoot: pin})
			if err != nil {
				return err
			}
			defer d.Close()
			c, err := d.Counters()
			fallback = c[loader.ReasonSteerFallback]
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if fallback == 0 {
			t.Errorf("no steer-fallback counted after the daemon died")
		}
		// B's daemon lives on; a restart of A resumes steering: B's
		// echo requests reach A's new daemon and are decrypted.
		a.start()
		p.B.Run("ping", "-c", "5", "-i", "0.1", "-W", "1", "198.51.100.1")
		st := a.stats()
		if st.Counters["in-delivered"] < 5 || st.Links[0].Reasons["steered"] == 0 {
			t.Errorf("restarted daemon: delivered %d, want >= 5%s", st.Counters["in-delivered"], dump(a, b))
		}
		// Its replies start again at sequence number 1 under the same
		// keys, and B's replay window rightly refuses them: a restart
		// without a rekey must move the outbound sequence numbers past
		// what the dead daemon used (IKE would rekey instead).
		if bs := b.stats(); bs.InVerdicts["replay"] == 0 {
			t.Errorf("B accepted reused sequence numbers from the restarted A (replay 0)%s", dump(a, b))
		}
		keys, err := os.ReadFile(filepath.Join(filepath.Dir(confA), "tunnel-a.keys"))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(keys), "\n") {
			if strings.HasPrefix(line, "ip xfrm state add src 192.0.2.1 ") {
				words := strings.Fields(strings.ReplaceAll(strings.TrimPrefix(line, "ip xfrm state add "), "'", ""))
				a.ns.MustRun(t, a.bin, append(append([]string{"sa", "update"}, words...), "replay-oseq", "1000000", "--socket", a.socket)...)
			}
		}
		ping(t, p.A, "198.51.100.2", 3, a, b)
		ping(t, p.B, "198.51.100.1", 3, a, b)
	})
	checkNoLeaks(t, names)
}
