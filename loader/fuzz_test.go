package loader

import (
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// fuzzConfig turns one fuzz byte into a config: bits 0-4 enable ESP, AH,
// UDP-ESP, IPv4, IPv6; bit 5 adds NAT-T port 4501.
func fuzzConfig(bits uint8) Config {
	c := Config{ESP: bits&1 != 0, AH: bits&2 != 0, UDPESP: bits&4 != 0, IPv4: bits&8 != 0, IPv6: bits&16 != 0}
	if bits&32 != 0 {
		c.NATTPorts = []uint16{4501}
	}
	return c
}

// fuzzLinkAddr turns bits 6-7 of the fuzz byte into the link's address:
// unset (0), the test frames' destination (0x40), another host's (0x80),
// all zero (0xc0).
func fuzzLinkAddr(bits uint8) net.HardwareAddr {
	return []net.HardwareAddr{nil, llOwn, llOther, llZero}[bits>>6]
}

// differ runs frame through the BPF program and the Go reference and
// reports any disagreement on verdict, reason or matched SA.
func differ(c *Classifier, frame []byte, bits uint8) error {
	cfg := fuzzConfig(bits)
	if err := c.SetConfig(cfg); err != nil {
		return err
	}
	ll := fuzzLinkAddr(bits)
	if err := c.SetLinkAddr(ll); err != nil {
		return err
	}
	got, err := c.Classify(frame)
	if err != nil {
		return err
	}
	want := ReferenceClassify(frame, &ReferenceTable{SAs: testSAs, Config: cfg, LinkAddr: ll})
	if got != want {
		return fmt.Errorf("config %#x frame %s:\n  bpf:       %v\n  reference: %v", bits, hex.EncodeToString(frame), got, want)
	}
	return nil
}

// FuzzClassifyDifferential feeds random and mutated frames to the BPF
// program and to ReferenceClassify and requires the same verdict, reason
// and SA. Seeds: every crafted frame of the table test (also committed
// under testdata/fuzz).
func FuzzClassifyDifferential(f *testing.F) {
	for _, tc := range classifyCases() {
		f.Add(tc.frame, uint8(0x3f)|lladdrBits(tc.lladdr))
	}
	c := newTestClassifier(f)
	f.Fuzz(func(t *testing.T, frame []byte, bits uint8) {
		if err := differ(c, frame, bits); err != nil {
			t.Fatal(err)
		}
	})
}

// lladdrBits is fuzzLinkAddr's inverse.
func lladdrBits(ll net.HardwareAddr) uint8 {
	for i, a := range []net.HardwareAddr{nil, llOwn, llOther, llZero} {
		if ll.String() == a.String() {
			return uint8(i) << 6
		}
	}
	panic("no fuzz bits for link address " + ll.String())
}

// TestClassifyDifferentialMutations is the fuzz test's deterministic
// cousin for every `go test`: 20000 mutations of the crafted frames
// (byte flips, length fields, truncation, extension) under random configs.
func TestClassifyDifferentialMutations(t *testing.T) {
	c := newTestClassifier(t)
	rng := rand.New(rand.NewPCG(2, 6))
	cases := classifyCases()
	for i := range 20000 {
		frame := append([]byte(nil), cases[rng.IntN(len(cases))].frame...)
		for range 1 + rng.IntN(3) {
			switch op := rng.IntN(4); {
			case op == 0 && len(frame) > 0:
				frame[rng.IntN(len(frame))] = byte(rng.Uint32())
			case op == 1 && len(frame) > 14:
				frame = frame[:14+rng.IntN(len(frame)-14)]
			case op == 2:
				frame = append(frame, make([]byte, rng.IntN(64))...)
			case op == 3 && len(frame) > 2:
				// Interesting small values into a 16-bit field.
				j := rng.IntN(len(frame) - 1)
				v := []uint16{0, 1, 7, 8, 12, 20, 40, 500, 4500, 4501, 0xffff}[rng.IntN(11)]
				frame[j], frame[j+1] = byte(v>>8), byte(v)
			}
		}
		if err := differ(c, frame, uint8(rng.Uint32())); err != nil {
			t.Fatalf("mutation %d: %v", i, err)
		}
	}
}

// TestWriteFuzzCorpus regenerates testdata/fuzz/FuzzClassifyDifferential
// from the crafted frames when XDPSEC_WRITE_CORPUS=1.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("XDPSEC_WRITE_CORPUS") != "1" {
		t.Skip("set XDPSEC_WRITE_CORPUS=1 to rewrite the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzClassifyDifferential")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, tc := range classifyCases() {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\nbyte(%s)\n", strconv.Quote(string(tc.frame)), strconv.QuoteRune(rune(0x3f|lladdrBits(tc.lladdr))))
		name := fmt.Sprintf("seed-%02d", i)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
