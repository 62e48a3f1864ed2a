package main

import (
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/xdpsec/xdpsec/loader"
)

func TestParseSteerSAs(t *testing.T) {
	got, err := parseSteerSAs([]string{
		"src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x1001",
		"ip xfrm state add src 2001:db8::2 dst 2001:db8::1 proto ah spi 4099 auth-trunc 'hmac(sha256)' 0x" + strings.Repeat("ab", 32) + " 128",
		"src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x2002 encap espinudp 4500 4501 0.0.0.0",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []steerSA{
		{key: loader.SAKey{SPI: 0x1001, Dst: netip.MustParseAddr("192.0.2.1"), Proto: loader.ProtoESP}},
		{key: loader.SAKey{SPI: 4099, Dst: netip.MustParseAddr("2001:db8::1"), Proto: loader.ProtoAH}, keyed: true},
		// The SA receives on its destination port.
		{key: loader.SAKey{SPI: 0x2002, Dst: netip.MustParseAddr("192.0.2.1"), Proto: loader.ProtoESP}, encapPort: 4501},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d SAs", len(got))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("SA %d: %+v, want %+v", i, got[i], want[i])
		}
	}

	const secret = "0102030405060708090a0b0c0d0e0f10111213" // 152 bits: no AES key size
	for _, bad := range []string{
		"src 192.0.2.2 dst 192.0.2.1 proto esp",
		"src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x1001 aead 'rfc4106(gcm(aes))' 0x" + secret + " 128",
		"src 192.0.2.2 dst 192.0.2.1 proto esp spi 'open",
	} {
		_, err := parseSteerSAs([]string{bad})
		if err == nil {
			t.Errorf("accepted %q", bad)
			continue
		}
		if _, ok := err.(usageError); !ok || !strings.HasPrefix(err.Error(), "--sa #1: ") {
			t.Errorf("%q: error %q is not a usage error naming --sa #1", bad, err)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error shows the key: %q", err)
		}
	}
	dup := "src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x1001"
	if _, err := parseSteerSAs([]string{dup, dup}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate SA: %v", err)
	}
}

func TestParsePorts(t *testing.T) {
	got, err := parsePorts([]string{"4501", "10000", "4501"})
	if err != nil || len(got) != 2 || got[0] != 4501 || got[1] != 10000 {
		t.Errorf("parsePorts = %v, %v", got, err)
	}
	for _, bad := range []string{"0", "500", "4500", "65536", "x", "-1"} {
		if _, err := parsePorts([]string{bad}); err == nil {
			t.Errorf("port %q accepted", bad)
		}
	}
	many := make([]string, loader.MaxNATTPorts+1)
	for i := range many {
		many[i] = strconv.Itoa(10000 + i)
	}
	if _, err := parsePorts(many); err == nil {
		t.Errorf("%d ports accepted", len(many))
	}
}

func TestAttachUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"attach"}, "--link IF is required"},
		{[]string{"attach", "eth0"}, `unexpected argument "eth0"`},
		{[]string{"attach", "--link", "lo", "--mode", "fast"}, `unknown XDP mode "fast"`},
		{[]string{"attach", "--link", "lo", "--nat-t-port", "500"}, "--nat-t-port"},
		{[]string{"attach", "--link", "lo", "--sa", "src 192.0.2.2"}, "--sa #1"},
		{[]string{"attach", "--bogus"}, "bogus"},
		{[]string{"detach"}, "--link IF is required"},
		{[]string{"status", "eth0"}, `unexpected argument "eth0"`},
	} {
		code, _, stderr := runCLI(t, c.args...)
		first, _, _ := strings.Cut(stderr, "\n")
		if code != 2 || !strings.Contains(first, c.want) || !strings.HasPrefix(first, "xdpsec "+c.args[0]+": ") {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 and %q", c.args, code, stderr, c.want)
		}
	}
}

func TestPinRootOutsideIPNetnsExec(t *testing.T) {
	// The test binary runs in the caller's mount namespace, where /sys is
	// the system's sysfs (or at least not `ip netns exec`'s).
	if n := ipNetnsExecName(); n != "" {
		t.Skipf("running under ip netns exec %s", n)
	}
	if err := checkPinRoot(loader.DefaultPinRoot); err != nil {
		t.Errorf("checkPinRoot(default) = %v", err)
	}
	if err := checkPinRoot(t.TempDir()); err != nil {
		t.Errorf("a pin root outside /sys/fs/bpf is the caller's business: %v", err)
	}
}

func TestMissingCaps(t *testing.T) {
	eff, ok := effectiveCaps()
	if !ok {
		t.Skip("no /proc/self/status")
	}
	miss := missingCaps()
	hasBPF := eff&(1<<capBPF|1<<capSysAdmin) != 0
	hasNet := eff&(1<<capNetAdmin|1<<capSysAdmin) != 0
	if hasBPF == containsStr(miss, "CAP_BPF") || hasNet == containsStr(miss, "CAP_NET_ADMIN") {
		t.Errorf("CapEff %x: missing %v", eff, miss)
	}
	if os.Geteuid() == 0 && len(miss) != 0 {
		t.Logf("root without %v (a restricted container?)", miss)
	}
}

func containsStr(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}
