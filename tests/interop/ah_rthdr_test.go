package interop

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// rthdrCase is scapy_ah_rthdr.py's CASE.json: one AH transport SA over
// IPv6 packets from Src routed by a type 0 Routing header through Hops
// (Hops[0] the first destination, the last the final one).
type rthdrCase struct {
	SPI     uint32   `json:"spi"`
	Auth    string   `json:"auth"`
	AuthKey string   `json:"auth_key"`
	Src     string   `json:"src"`
	Hops    []string `json:"hops"`
	Seq     uint64   `json:"seq"`
	Count   int      `json:"count"`
}

// spec is the SA as the node addressed as dst knows it: pcap decrypt looks
// SAs up by (SPI, destination, protocol), and the destination of a source
// routed packet changes on its way.
func (c rthdrCase) spec(dst string) string {
	return fmt.Sprintf("src %s dst %s proto ah spi 0x%08x mode transport auth-trunc hmac(sha256) 0x%s 128 replay-window 128",
		c.Src, dst, c.SPI, c.AuthKey)
}

func runRthdrScript(t *testing.T, args ...string) []byte {
	t.Helper()
	return runPython(t, "scapy_ah_rthdr.py", args...)
}

// TestScapyAHRoutingHeader: AH over IPv6 (transport, HMAC-SHA-256-128)
// with a type 0 Routing header of Segments Left 2, against scapy, whose
// sender computes the ICV over the header as it will be at the final
// destination (RFC 4302 §3.3.3.1.2). scapy -> xdpsec: its packets verify
// as sent, after one hop and at the final destination, and a route
// changed in transit fails (bad-icv). xdpsec -> scapy: xdpsec's packets
// leave with the route as given and, routed hop by hop to the final
// destination (RFC 2460 §4.4), verify in scapy, which checks a received
// packet as it is; the same packets verified before routing must fail
// there, which shows the ICV is over the final form.
func TestScapyAHRoutingHeader(t *testing.T) {
	needScapy(t)
	dir := t.TempDir()
	c := rthdrCase{SPI: 0x7007, Auth: "SHA2-256-128", AuthKey: key(32, 0x70), Src: "2001:db8:1::1",
		Hops: []string{"2001:db8:aa::1", "2001:db8:aa::2", "2001:db8:1::2"}, Seq: 5, Count: 3}
	cj, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	caseFile := filepath.Join(dir, "case.json")
	if err := os.WriteFile(caseFile, cj, 0o600); err != nil {
		t.Fatal(err)
	}
	var gen struct{ SHA256 []string }
	if err := json.Unmarshal(runRthdrScript(t, "gen", caseFile, dir), &gen); err != nil {
		t.Fatalf("gen output: %v", err)
	}
	if len(gen.SHA256) != c.Count {
		t.Fatalf("scapy generated %d packets, want %d", len(gen.SHA256), c.Count)
	}

	// scapy -> xdpsec, at every node the packet is addressed to.
	for hop, dst := range c.Hops {
		out := xdpsec(t, "pcap", "decrypt", "--sa", c.spec(dst), "--json", filepath.Join(dir, fmt.Sprintf("scapy-hop%d.pcap", hop)))
		lines := parseLines(t, out)
		if len(lines) != c.Count {
			t.Fatalf("hop %d: %d decrypt lines for %d packets", hop, len(lines), c.Count)
		}
		for i, l := range lines {
			if l.Verdict != "ok" || l.Seq == nil || *l.Seq != c.Seq+uint64(i) || l.InnerSHA256 != gen.SHA256[i] {
				t.Errorf("hop %d, scapy packet %d: %+v, want ok seq %d sha256 %s", hop, i, l, c.Seq+uint64(i), gen.SHA256[i])
			}
		}
	}
	out := xdpsec(t, "pcap", "decrypt", "--sa", c.spec(c.Hops[0]), "--json", filepath.Join(dir, "scapy-tampered.pcap"))
	lines := parseLines(t, out)
	if len(lines) != c.Count {
		t.Fatalf("tampered: %d decrypt lines for %d packets", len(lines), c.Count)
	}
	for i, l := range lines {
		if l.Verdict != "bad-icv" {
			t.Errorf("scapy packet %d with its route changed: %s, want bad-icv", i, l.Verdict)
		}
	}

	// xdpsec -> scapy. A transport SA fits packets from its src to its dst:
	// the sender's is addressed to the first hop.
	xdpsec(t, "pcap", "encrypt", "--sa", c.spec(c.Hops[0]), filepath.Join(dir, "plain.pcap"),
		"-w", filepath.Join(dir, "xdpsec.pcap"), "--seq", fmt.Sprint(c.Seq))
	var chk struct {
		Verified int
		Errors   []string
	}
	if err := json.Unmarshal(runRthdrScript(t, "check", caseFile, dir), &chk); err != nil {
		t.Fatalf("check output: %v", err)
	}
	for _, e := range chk.Errors {
		t.Errorf("xdpsec -> scapy: %s", e)
	}
	if chk.Verified != c.Count {
		t.Errorf("scapy verified %d of %d xdpsec packets", chk.Verified, c.Count)
	}
}
