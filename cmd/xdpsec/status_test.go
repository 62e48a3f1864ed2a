package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStatusNothingAttached(t *testing.T) {
	root := filepath.Join(t.TempDir(), "none")
	code, out, stderr := runCLI(t, "status", "--pin-root", root)
	if code != 0 || !strings.Contains(out, "attached nowhere") {
		t.Errorf("status: exit %d, %q %q", code, out, stderr)
	}
	code, out, _ = runCLI(t, "status", "--pin-root", root, "-j")
	if code != 0 || out != "[]\n" {
		t.Errorf("status -j: exit %d, %q", code, out)
	}
}

func TestStatusReportsStalePins(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: reads the bpf pin directory")
	}
	// A pin directory whose link is not here (another namespace, or
	// stale) is listed with the reason, not dropped and not fatal.
	root := t.TempDir()
	os.Mkdir(filepath.Join(root, "lo"), 0o700)
	code, out, stderr := runCLI(t, "status", "--pin-root", root, "-j")
	if code != 0 || !strings.Contains(out, `"interface":"lo"`) || !strings.Contains(out, `"error":"`) {
		t.Errorf("status -j over a stale pin dir: exit %d, %q %q", code, out, stderr)
	}
}

func TestPrintStatus(t *testing.T) {
	st := statusJSON{
		Interface: "eth0", Ifindex: 2, Mode: "native", ProgramID: 7, LinkID: 3, PinPath: "/sys/fs/bpf/xdpsec/eth0",
		Features: []string{"esp", "ah"},
		Config:   &configJSON{ESP: true, AH: false, UDPESP: true, IPv4: true, IPv6: true, NATTPorts: []uint16{4500, 4501}},
		Counters: map[string]uint64{"no-state": 12, "steered": 34},
		SAs:      []saJSON{{SPI: "0x00001001", Dst: "192.0.2.1", Proto: "esp", ID: 1, EncapPort: 4500, Packets: 34, Bytes: 4080}},
	}
	var b bytes.Buffer
	printStatus(&b, st)
	out := b.String()
	for _, want := range []string{
		"eth0 (ifindex 2): native mode, program 7 (bpf_link 3), pinned at /sys/fs/bpf/xdpsec/eth0",
		"offload on: esp udp-esp ipv4 ipv6; off: ah; ESP-in-UDP ports: 4500 4501",
		"XfrmInNoStates", "SAs: 1", "udp/4500", "4080",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	// Every reason has a row, in counter order.
	if i, j := strings.Index(out, "no-state"), strings.Index(out, "steered"); i < 0 || j < i {
		t.Errorf("reason rows out of order:\n%s", out)
	}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && (f[0] == "no-state" && f[1] != "12" || f[0] == "steered" && f[1] != "34") {
			t.Errorf("row %q", l)
		}
	}
}
