// Package ops runs the built xdpsec daemon the way an operator does and
// checks what an operator sees: Prometheus metrics against the traffic sent,
// drop captures read back by tshark, logs that never show a key, the daemon
// under exactly the systemd unit's capabilities, and the flame-graph tool.
package ops

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/userspace/engine"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// xdpsecBinary builds cmd/xdpsec once per test binary (not stripped: the
// profile test needs its symbols).
func xdpsecBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "xdpsec-ops-bin-")
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

// tunnelKeys are the random keys (16-byte AES key + 4-byte salt) of one
// test's tunnel: A->B (SPIs 0x1001, 0x1101) and B->A (0x1002, 0x1102).
type tunnelKeys struct{ AB, BA []byte }

func newKeys(t *testing.T) tunnelKeys {
	k := tunnelKeys{AB: make([]byte, 20), BA: make([]byte, 20)}
	rand.Read(k.AB)
	rand.Read(k.BA)
	return k
}

// The published example keys, replaced by random ones in every test.
const (
	exampleKeyAB = "0102030405060708090a0b0c0d0e0f1011121314"
	exampleKeyBA = "2122232425262728292a2b2c2d2e2f3031323334"
)

// writeConfig copies examples/tunnel-SIDE.{conf,keys} into a fresh
// directory with the keys replaced by k's, the key file chmod 600, extra
// lines appended to the config.
func writeConfig(t *testing.T, side string, k tunnelKeys, extra ...string) (conf, keys, socket string) {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"tunnel-" + side + ".conf", "tunnel-" + side + ".keys"} {
		b, err := os.ReadFile(filepath.Join("../../examples", f))
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if strings.HasSuffix(f, ".conf") {
			s += "\n" + strings.Join(extra, "\n") + "\n"
		} else {
			if !strings.Contains(s, exampleKeyAB) || !strings.Contains(s, exampleKeyBA) {
				t.Fatalf("%s no longer holds the example keys this test replaces", f)
			}
			s = strings.ReplaceAll(s, exampleKeyAB, hex.EncodeToString(k.AB))
			s = strings.ReplaceAll(s, exampleKeyBA, hex.EncodeToString(k.BA))
		}
		if err := os.WriteFile(filepath.Join(dir, f), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "tunnel-"+side+".conf"), filepath.Join(dir, "tunnel-"+side+".keys"), filepath.Join(dir, "run", "control.sock")
}

// mountBPFFS gives the test a bpffs of its own for the pins, visible from
// the daemons' `ip netns exec` mount namespaces (which hide /sys/fs/bpf).
func mountBPFFS(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs on %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// syncBuffer is a bytes.Buffer safe for the daemon's writes and the test's
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// daemon is one running `xdpsec run`.
type daemon struct {
	t      *testing.T
	bin    string
	ns     *testutil.NS
	conf   string
	socket string
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

// startDaemon runs `[wrap...] xdpsec run --config conf --socket socket
// extra...` in ns and waits until it answers `stats`. It is stopped
// (SIGTERM, then SIGKILL after 10 s) when the test ends.
func startDaemon(t *testing.T, ns *testutil.NS, conf, socket string, wrap []string, extra ...string) *daemon {
	t.Helper()
	d := launchDaemon(t, ns, conf, socket, wrap, extra...)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := ns.Run(d.bin, "stats", "--socket", d.socket); err == nil {
			return d
		}
		select {
		case <-d.done:
			t.Fatalf("xdpsec run exited at start (%v):\n%s%s", d.err, d.stdout, d.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("xdpsec run not answering on %s after 15 s:\n%s%s", d.socket, d.stdout, d.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// launchDaemon starts the daemon without waiting for it.
func launchDaemon(t *testing.T, ns *testutil.NS, conf, socket string, wrap []string, extra ...string) *daemon {
	t.Helper()
	d := &daemon{t: t, bin: xdpsecBinary(t), ns: ns, conf: conf, socket: socket, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	args := append(append(slicesClone(wrap), d.bin, "run", "--config", conf, "--socket", socket), extra...)
	d.cmd = ns.Command(args[0], args[1:]...)
	d.cmd.Stdout, d.cmd.Stderr = d.stdout, d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(d.stop)
	return d
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// stop sends SIGTERM to the daemon's PID and waits (bounded), then SIGKILL.
func (d *daemon) stop() {
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		d.t.Errorf("xdpsec run (pid %d) ignored SIGTERM for 10 s; killing it", d.cmd.Process.Pid)
		d.cmd.Process.Kill()
		<-d.done
	}
}

// wait waits (bounded) for the daemon to exit by itself.
func (d *daemon) wait(timeout time.Duration) bool {
	select {
	case <-d.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

func (d *daemon) cli(args ...string) (string, error) {
	return d.ns.Run(d.bin, append(args, "--socket", d.socket)...)
}

func (d *daemon) stats() engine.Stats {
	d.t.Helper()
	out, err := d.cli("stats", "-j")
	if err != nil {
		d.t.Fatal(err)
	}
	var st engine.Stats
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		d.t.Fatalf("stats -j: %v\n%s", err, out)
	}
	return st
}

func (d *daemon) dump() string {
	st, _ := d.cli("stats")
	return fmt.Sprintf("\n--- %s stats:\n%s--- stdout:\n%s--- stderr:\n%s", d.ns.Name, st, d.stdout, d.stderr)
}

// ping sends n echo requests through the tunnel; all must come back.
func ping(t *testing.T, ns *testutil.NS, dst string, n int, ds ...*daemon) string {
	t.Helper()
	out, err := ns.Run("ping", "-c", strconv.Itoa(n), "-i", "0.1", "-w", "10", dst)
	if err != nil || !strings.Contains(out, fmt.Sprintf("%d received", n)) {
		var b strings.Builder
		for _, d := range ds {
			b.WriteString(d.dump())
		}
		t.Fatalf("ping %s from %s: %v\n%s%s", dst, ns.Name, err, out, b.String())
	}
	return out
}

// udpBurst sends n datagrams of size bytes from A to B's addr through the
// tunnel and returns how many arrived (B's socket reads until 2 s of quiet).
func udpBurst(t *testing.T, p *testutil.VethPair, addr string, n, size int) int {
	t.Helper()
	var rc, sc net.PacketConn
	if err := p.B.Do(func() (err error) { rc, err = net.ListenPacket("udp", addr); return }); err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := p.A.Do(func() (err error) { sc, err = net.ListenPacket("udp", "198.51.100.1:0"); return }); err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	dst, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 1)
	go func() {
		buf := make([]byte, 65536)
		k := 0
		for k < n {
			rc.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, _, err := rc.ReadFrom(buf); err != nil {
				break
			}
			k++
		}
		got <- k
	}()
	payload := make([]byte, size)
	for i := 0; i < n; i++ {
		if _, err := sc.WriteTo(payload, dst); err != nil {
			t.Fatalf("send datagram %d: %v", i, err)
		}
		if i%32 == 31 {
			time.Sleep(time.Millisecond) // stay under the TUN and socket queues
		}
	}
	return <-got
}

// scrape fetches http://addr/metrics from inside ns (the dial runs on a
// thread in the namespace) and returns the samples by series, e.g.
// `xdpsec_sa_packets_total{dir="in",dst="192.0.2.2",proto="esp",spi="0x00001001"}`
// with labels as the exposition format prints them (sorted by name).
func scrape(t *testing.T, ns *testutil.NS, addr string) map[string]float64 {
	t.Helper()
	br, done := httpGet(t, ns, addr, "/metrics")
	defer done()
	samples := map[string]float64{}
	sc := bufio.NewScanner(br)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("bad exposition line %q", line)
		}
		samples[line[:i]] = v
	}
	return samples
}

// httpGet sends GET path to addr from inside ns (the dial runs on a thread
// in the namespace), checks for 200 and returns the body's reader.
func httpGet(t *testing.T, ns *testutil.NS, addr, path string) (*bufio.Reader, func()) {
	t.Helper()
	var conn net.Conn
	if err := ns.Do(func() (err error) { conn, err = net.DialTimeout("tcp", addr, 5*time.Second); return }); err != nil {
		t.Fatalf("dial metrics %s in %s: %v", addr, ns.Name, err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\nAccept: text/plain\r\n\r\n", path, addr)
	br := bufio.NewReader(conn)
	status, err := br.ReadString('\n')
	if err != nil || !strings.Contains(status, " 200 ") {
		conn.Close()
		t.Fatalf("GET %s: %q %v", path, status, err)
	}
	for { // headers
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
	}
	return br, func() { conn.Close() }
}

var labelRE = regexp.MustCompile(`(\w+)="([^"]*)"`)

// metric returns the value of the series of family name whose labels
// include every pair of want ("spi", "0x00001001", ...), and whether
// exactly one series matched.
func metric(samples map[string]float64, name string, want ...string) (float64, bool) {
	var v float64
	n := 0
	for series, val := range samples {
		fam, labels, _ := strings.Cut(series, "{")
		if fam != name {
			continue
		}
		got := map[string]string{}
		for _, m := range labelRE.FindAllStringSubmatch(labels, -1) {
			got[m[1]] = m[2]
		}
		ok := true
		for i := 0; i+1 < len(want); i += 2 {
			if got[want[i]] != want[i+1] {
				ok = false
			}
		}
		if ok {
			v, n = val, n+1
		}
	}
	return v, n == 1
}

// requireTools skips the test when a judge it needs is missing.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
}
