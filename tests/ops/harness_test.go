// Package ops runs the built xdpsec daemon the way an operator does and
// checks what an operator sees: Prometheus metrics against the traffic sent,
// drop captures read back by tshark, logs that never show a key, the daemon
// under exactly the systemd unit's capabilities, and the flame-graph tool.
package ops

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/internal/testutil/xdpsectest"
)

func TestMain(m *testing.M) { xdpsectest.Main(m) }

// tunnelKeys are the random keys (16-byte AES key + 4-byte salt) of one
// test's tunnel, one per SA: A->B (SPIs 0x1001, IPv6 0x1101) and B->A
// (0x1002, IPv6 0x1102).
type tunnelKeys struct{ AB, BA, AB6, BA6 []byte }

func newKeys(t *testing.T) tunnelKeys {
	k := tunnelKeys{AB: make([]byte, 20), BA: make([]byte, 20), AB6: make([]byte, 20), BA6: make([]byte, 20)}
	for _, b := range k.all() {
		rand.Read(b)
	}
	return k
}

// all returns every key of the tunnel.
func (k tunnelKeys) all() [][]byte { return [][]byte{k.AB, k.BA, k.AB6, k.BA6} }

// The published example keys, replaced by random ones in every test.
const (
	exampleKeyAB  = "0102030405060708090a0b0c0d0e0f1011121314"
	exampleKeyBA  = "2122232425262728292a2b2c2d2e2f3031323334"
	exampleKeyAB6 = "4142434445464748494a4b4c4d4e4f5051525354"
	exampleKeyBA6 = "6162636465666768696a6b6c6d6e6f7071727374"
)

// writeConfig writes examples/tunnel-SIDE.{conf,keys} into a fresh
// directory with the keys replaced by k's (the key file chmod 600) and extra
// lines appended to the config.
func writeConfig(t *testing.T, side string, k tunnelKeys, extra ...string) xdpsectest.Config {
	t.Helper()
	name := "tunnel-" + side
	keys := strings.Join(xdpsectest.ReadExample(t, name+".keys"), "\n")
	if !strings.Contains(keys, exampleKeyAB) || !strings.Contains(keys, exampleKeyBA) || !strings.Contains(keys, exampleKeyAB6) || !strings.Contains(keys, exampleKeyBA6) {
		t.Fatalf("%s.keys no longer holds the example keys this test replaces", name)
	}
	keys = strings.ReplaceAll(keys, exampleKeyAB, hex.EncodeToString(k.AB))
	keys = strings.ReplaceAll(keys, exampleKeyBA, hex.EncodeToString(k.BA))
	keys = strings.ReplaceAll(keys, exampleKeyAB6, hex.EncodeToString(k.AB6))
	keys = strings.ReplaceAll(keys, exampleKeyBA6, hex.EncodeToString(k.BA6))
	return xdpsectest.WriteConfig(t, t.TempDir(), name, append(xdpsectest.ReadExample(t, name+".conf"), extra...), strings.Split(keys, "\n"))
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
