package pcap

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

// Files written by tcpdump, dumpcap and text2pcap are read here and
// compared, packet by packet, with what tshark (an independent reader)
// says they hold: bytes, lengths and timestamps.

func needTool(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("needs %s (scripts/setup.sh installs it): %v", n, err)
		}
	}
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

type tsharkFrame struct {
	raw    []byte
	epoch  string // seconds.nanoseconds as tshark prints it
	len    int
	capLen int
}

// tsharkFrames asks tshark what is in path.
func tsharkFrames(t *testing.T, path string) []tsharkFrame {
	t.Helper()
	out := run(t, "tshark", "-n", "-r", path, "-T", "json", "-x")
	var pkts []struct {
		Source struct {
			Layers map[string]json.RawMessage `json:"layers"`
		} `json:"_source"`
	}
	if err := json.Unmarshal(out, &pkts); err != nil {
		t.Fatalf("tshark json: %v", err)
	}
	var frames []tsharkFrame
	for i, p := range pkts {
		var raw []any
		var meta map[string]any
		if err := json.Unmarshal(p.Source.Layers["frame_raw"], &raw); err != nil || len(raw) == 0 {
			t.Fatalf("tshark packet %d: no frame_raw: %v", i, err)
		}
		if err := json.Unmarshal(p.Source.Layers["frame"], &meta); err != nil {
			t.Fatalf("tshark packet %d: frame: %v", i, err)
		}
		b, err := hex.DecodeString(raw[0].(string))
		if err != nil {
			t.Fatal(err)
		}
		l, _ := strconv.Atoi(meta["frame.len"].(string))
		cl, _ := strconv.Atoi(meta["frame.cap_len"].(string))
		frames = append(frames, tsharkFrame{raw: b, epoch: meta["frame.time_epoch"].(string), len: l, capLen: cl})
	}
	return frames
}

func epoch(ts time.Time) string {
	return fmt.Sprintf("%d.%09d", ts.Unix(), ts.Nanosecond())
}

// compareWithTshark reads path with this package and with tshark and
// requires the same packets. It returns the link types seen.
func compareWithTshark(t *testing.T, path string, wantNG bool) []LinkType {
	t.Helper()
	want := tsharkFrames(t, path)
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.IsPcapng() != wantNG {
		t.Errorf("IsPcapng %v, want %v", r.IsPcapng(), wantNG)
	}
	got := readAll(t, r)
	if len(got) != len(want) || len(got) == 0 {
		t.Fatalf("read %d packets, tshark reads %d", len(got), len(want))
	}
	var lts []LinkType
	for i := range want {
		g, w := got[i], want[i]
		if !bytes.Equal(g.data, w.raw) {
			t.Errorf("packet %d: bytes differ from tshark's\n%x\n%x", i, g.data, w.raw)
		}
		if g.origLen != w.len || len(g.data) != w.capLen {
			t.Errorf("packet %d: lengths %d/%d, tshark %d/%d", i, len(g.data), g.origLen, w.capLen, w.len)
		}
		if epoch(g.ts) != w.epoch {
			t.Errorf("packet %d: timestamp %s, tshark %s", i, epoch(g.ts), w.epoch)
		}
		lts = append(lts, g.lt)
	}
	return lts
}

// TestText2pcapFiles converts a hex dump with text2pcap into both formats
// and several link types, and editcap into the nanosecond format.
func TestText2pcapFiles(t *testing.T) {
	needTool(t, "text2pcap", "tshark", "editcap")
	dir := t.TempDir()
	// Two packets: an ESP packet and an IPv6 UDP packet, as raw IP, with
	// text2pcap's per-packet timestamps.
	// (Made with scapy; checksums and lengths are right, or tshark's
	// dissectors complain.)
	esp := "4500002d000040004032b69bc0000201c000020200000100000000010102030405060708090a0b0c0d0e0f1011"
	udp6 := "600000000010114020010db800000000000000000000000120010db8" +
		"00000000000000000000000211941194001081310000000000000000"
	var dump strings.Builder
	for i, p := range []string{esp, udp6} {
		fmt.Fprintf(&dump, "2024-05-06T07:08:0%d.123456789\n", i)
		for off := 0; off < len(p)/2; off += 16 {
			end := min(off+16, len(p)/2)
			fmt.Fprintf(&dump, "%06x", off)
			for j := off; j < end; j++ {
				fmt.Fprintf(&dump, " %s", p[2*j:2*j+2])
			}
			dump.WriteString("\n")
		}
	}
	txt := filepath.Join(dir, "dump.txt")
	if err := os.WriteFile(txt, []byte(dump.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		args   []string
		ng     bool
		lt     LinkType
		editto string
	}{
		{"pcapng-raw", []string{"-l", "101"}, true, LinkTypeRaw, ""},
		{"pcap-raw", []string{"-F", "pcap", "-l", "101"}, false, LinkTypeRaw, ""},
		{"pcap-eth", []string{"-F", "pcap", "-e", "0x0800"}, false, LinkTypeEthernet, ""},
		{"pcapng-eth", []string{"-e", "0x86dd"}, true, LinkTypeEthernet, ""},
		{"nsecpcap-raw", []string{"-F", "pcap", "-l", "101"}, false, LinkTypeRaw, "nsecpcap"},
		{"pcapng-ipv4", []string{"-l", "228"}, true, LinkTypeIPv4, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(dir, c.name)
			args := append([]string{"-q", "-t", "%Y-%m-%dT%H:%M:%S."}, c.args...)
			run(t, "text2pcap", append(args, txt, out)...)
			if c.editto != "" {
				out2 := out + "." + c.editto
				run(t, "editcap", "-F", c.editto, out, out2)
				out = out2
			}
			for i, lt := range compareWithTshark(t, out, c.ng) {
				if lt != c.lt {
					t.Errorf("packet %d: link type %v, want %v", i, lt, c.lt)
				}
			}
		})
	}
}

// TestLiveCaptures captures real traffic inside a fresh network namespace
// with tcpdump (classic pcap, Ethernet and Linux cooked v1/v2 headers) and
// dumpcap (pcapng), then reads the files.
func TestLiveCaptures(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace and captures in it")
	}
	needTool(t, "ip", "tcpdump", "dumpcap", "tshark", "ping")
	var rnd [4]byte
	rand.Read(rnd[:])
	ns := fmt.Sprintf("xdpsec-pcap-%x", rnd)
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	for _, args := range [][]string{
		{"link", "add", "veth0", "type", "veth", "peer", "name", "veth1"},
		{"link", "set", "lo", "up"},
		{"link", "set", "veth0", "up"},
		{"link", "set", "veth1", "up"},
		{"addr", "add", "192.0.2.1/24", "dev", "veth0"},
		{"addr", "add", "2001:db8::1/64", "dev", "veth0", "nodad"},
		// Static neighbours: the pings leave veth0 at once, without
		// waiting for address resolution nobody would answer.
		{"neigh", "add", "192.0.2.2", "lladdr", "02:00:00:00:00:02", "dev", "veth0"},
		{"neigh", "add", "2001:db8::2", "lladdr", "02:00:00:00:00:02", "dev", "veth0"},
	} {
		run(t, "ip", append([]string{"-n", ns}, args...)...)
	}
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		cmd  []string
		ng   bool
		lt   LinkType
	}{
		{"tcpdump-eth", []string{"tcpdump", "-n", "-U", "-i", "veth1", "-w"}, false, LinkTypeEthernet},
		{"tcpdump-nano", []string{"tcpdump", "-n", "-U", "--time-stamp-precision=nano", "-i", "veth1", "-w"}, false, LinkTypeEthernet},
		{"tcpdump-sll", []string{"tcpdump", "-n", "-U", "-i", "any", "-y", "LINUX_SLL", "-w"}, false, LinkTypeLinuxSLL},
		{"tcpdump-sll2", []string{"tcpdump", "-n", "-U", "-i", "any", "-y", "LINUX_SLL2", "-w"}, false, LinkTypeLinuxSLL2},
		{"dumpcap-ng", []string{"dumpcap", "-q", "-i", "veth1", "-w"}, true, LinkTypeEthernet},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(dir, c.name)
			capture(t, ns, append(c.cmd, out), out)
			lts := compareWithTshark(t, out, c.ng)
			for i, lt := range lts {
				if lt != c.lt {
					t.Errorf("packet %d: link type %v, want %v", i, lt, c.lt)
				}
			}
			// Every capture holds our pings: find an IPv4 and an IPv6 one.
			r, err := Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			seen := map[uint16]bool{}
			for {
				p, err := r.Next()
				if err != nil {
					break
				}
				if _, et, err := L3Offset(p.LinkType, p.Data); err == nil {
					seen[et] = true
				}
			}
			if !seen[EtherTypeIPv4] || !seen[EtherTypeIPv6] {
				t.Errorf("L3Offset found IPv4 %v IPv6 %v in the capture, want both", seen[EtherTypeIPv4], seen[EtherTypeIPv6])
			}
		})
	}
}

// capture runs the capture command inside ns, sends pings from the
// namespace out of veth0 (they cross to veth1, where nobody answers) until
// the file holds packets, then stops the capture by its PID.
func capture(t *testing.T, ns string, cmdline []string, out string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, cmdline...)...)
	var stderr testutil.LogBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cmd.Process.Signal(os.Interrupt)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		}
	}
	defer stop()
	// Wait (bounded) for the capture to start listening.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && !strings.Contains(stderr.String(), "istening on") && !strings.Contains(stderr.String(), "apturing on") {
		time.Sleep(50 * time.Millisecond)
	}
	for i := 0; i < 3; i++ {
		exec.Command("ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "0.2", "-s", strconv.Itoa(56+i*500), "192.0.2.2").Run()
		exec.Command("ip", "netns", "exec", ns, "ping", "-6", "-c", "1", "-W", "0.2", "-I", "veth0", "2001:db8::2").Run()
	}
	time.Sleep(300 * time.Millisecond)
	stop()
	if st, err := os.Stat(out); err != nil || st.Size() <= 24 {
		t.Fatalf("capture %s wrote nothing (%v); stderr: %s", cmdline[0], err, stderr.String())
	}
}
