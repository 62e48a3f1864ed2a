package deploy

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/loader"
	"github.com/xdpsec/xdpsec/userspace/afxdp"
	"github.com/xdpsec/xdpsec/userspace/engine/tun"
)

// childEnv makes the test binary run the daemon's privileged operations
// (childSteps) instead of the tests: the parent starts it inside a test
// namespace with a reduced capability set.
const childEnv = "XDPSEC_DEPLOY_CHILD"

// systemdMemlock is systemd's default LimitMEMLOCK for services (8 MiB
// since v250, Debian 12 ships 252), applied to the child so that a test
// run from an unlimited root shell sees what the service sees.
const systemdMemlock = 8 << 20

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childSteps(os.Stdout))
	}
	os.Exit(m.Run())
}

// childSteps runs, in order, what `xdpsec run` does that needs privilege,
// printing "ok STEP" or "fail STEP: error" for each; it stops at the first
// failure and returns 1.
func childSteps(w io.Writer) int {
	ifname, pinRoot := os.Getenv("XDPSEC_LINK"), os.Getenv("XDPSEC_PIN_ROOT")
	dst := netip.MustParseAddr(os.Getenv("XDPSEC_ADDR"))
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: systemdMemlock, Max: systemdMemlock}); err != nil {
		fmt.Fprintf(w, "fail setup: %v\n", err)
		return 1
	}
	opts := loader.Options{PinRoot: pinRoot, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var (
		dp   *loader.Datapath
		sock *afxdp.Socket
	)
	steps := []struct {
		name string
		fn   func() error
	}{
		{"attach-xdp", func() (err error) {
			dp, err = loader.Attach(ifname, loader.ModeNative, opts)
			return err
		}},
		{"bpf-map-write", func() error {
			return dp.PutSA(loader.SAKey{SPI: 0x1001, Dst: dst, Proto: loader.ProtoESP}, loader.SA{ID: 1})
		}},
		{"bpf-map-read", func() error { _, err := dp.Counters(); return err }},
		{"afxdp-socket", func() (err error) {
			idx, err := ifindex(ifname)
			if err != nil {
				return err
			}
			// 16 MiB of UMEM: two queues at afxdp's default 8 MiB each.
			sock, err = afxdp.Open(afxdp.Config{Ifindex: idx, Queue: 0, Mode: afxdp.BindCopy, FrameCount: 8192})
			return err
		}},
		{"xskmap-write", func() error { return dp.SetXSK(0, sock.FD()) }},
		{"tun-create", func() error {
			d, err := tun.Create(tun.Config{Name: "xdpsec%d", Queues: 1})
			if err == nil {
				d.Close()
			}
			return err
		}},
		{"detach-xdp", func() error {
			sock.Close()
			dp.Close()
			return loader.Detach(ifname, opts)
		}},
	}
	for _, s := range steps {
		if err := s.fn(); err != nil {
			fmt.Fprintf(w, "fail %s: %s\n", s.name, strings.Join(strings.Fields(err.Error()), " "))
			return 1
		}
		fmt.Fprintf(w, "ok %s\n", s.name)
	}
	return 0
}

// ifindex asks the kernel (netlink), not /sys: nsenter left /sys showing
// the host's namespace.
func ifindex(name string) (int, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return 0, err
	}
	return ifc.Index, nil
}

// unitCaps is the shipped unit's capability set.
func unitCaps(t *testing.T) []string {
	t.Helper()
	caps, err := UnitCapabilities()
	if err != nil {
		t.Fatal(err)
	}
	return caps
}

type childResult struct {
	out  string
	ok   []string
	fail string // "STEP: error" of the failed step
}

// runChild runs childSteps in ns A of a fresh veth pair with the bounding
// set caps (uid 0 keeps exactly the bounding set across exec, as under
// systemd's CapabilityBoundingSet=). nsenter enters only the network
// namespace, so /sys/fs/bpf stays the host's bpffs.
func runChild(t *testing.T, caps []string) childResult {
	t.Helper()
	p := testutil.NewVethPair(t)
	var rnd [4]byte
	rand.Read(rnd[:])
	pinRoot := fmt.Sprintf("/sys/fs/bpf/xdpsec-deploy-%d-%s", os.Getpid(), hex.EncodeToString(rnd[:]))
	t.Cleanup(func() {
		p.A.Do(func() error {
			return loader.Detach(p.IfA, loader.Options{PinRoot: pinRoot, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		})
		os.RemoveAll(pinRoot)
	})
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var set []string
	for _, c := range caps {
		set = append(set, "+"+strings.TrimPrefix(strings.ToLower(c), "cap_"))
	}
	cmd := exec.Command("nsenter", "--net=/run/netns/"+p.A.Name, "--",
		"setpriv", "--bounding-set=-all,"+strings.Join(set, ","), "--inh-caps=-all", "--", self)
	cmd.Env = append(os.Environ(), childEnv+"=1", "XDPSEC_LINK="+p.IfA, "XDPSEC_PIN_ROOT="+pinRoot, "XDPSEC_ADDR="+p.IPv4A.String())
	out, _ := cmd.CombinedOutput()
	r := childResult{out: string(out)}
	for _, line := range strings.Split(string(out), "\n") {
		if s, ok := strings.CutPrefix(line, "ok "); ok {
			r.ok = append(r.ok, s)
		}
		if s, ok := strings.CutPrefix(line, "fail "); ok {
			r.fail = s
		}
	}
	return r
}

// TestUnitCapabilitiesSuffice runs the daemon's privileged operations with
// exactly the unit's capabilities: every one succeeds.
func TestUnitCapabilitiesSuffice(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tool := range []string{"nsenter", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (util-linux)", tool)
		}
	}
	caps := unitCaps(t)
	// Neither is needed: the XDP program is written for the verifier's
	// rules without CAP_PERFMON (bpf/xdpsec.c), pins live on a mounted
	// bpffs (no CAP_SYS_ADMIN).
	for _, c := range []string{"CAP_PERFMON", "CAP_SYS_ADMIN"} {
		if slices.Contains(caps, c) {
			t.Errorf("the unit grants %s, which xdpsec does not need", c)
		}
	}
	r := runChild(t, caps)
	if r.fail != "" || len(r.ok) != 7 {
		t.Fatalf("with %v:\n%s", caps, r.out)
	}
	t.Logf("with %v: %v", caps, r.ok)
}

// TestEachCapabilityIsNeeded removes one capability of the unit at a time
// and checks which operation fails and that its message says why.
func TestEachCapabilityIsNeeded(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tool := range []string{"nsenter", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (util-linux)", tool)
		}
	}
	caps := unitCaps(t)
	// What fails without each capability, and a phrase its error carries.
	want := map[string]struct{ step, msg string }{
		"CAP_BPF":       {"attach-xdp", "not permitted"},
		"CAP_NET_ADMIN": {"attach-xdp", "not permitted"},
		"CAP_NET_RAW":   {"afxdp-socket", "operation not permitted"},
		"CAP_IPC_LOCK":  {"afxdp-socket", "no buffer space"},
	}
	for _, c := range caps {
		t.Run(c, func(t *testing.T) {
			w, ok := want[c]
			if !ok {
				t.Fatalf("the unit grants %s but no test shows it is needed", c)
			}
			r := runChild(t, slices.DeleteFunc(slices.Clone(caps), func(s string) bool { return s == c }))
			t.Logf("without %s: %s", c, r.fail)
			if !strings.HasPrefix(r.fail, w.step+":") || !strings.Contains(strings.ToLower(r.fail), w.msg) {
				t.Errorf("without %s: want %s to fail with %q; child said:\n%s", c, w.step, w.msg, r.out)
			}
		})
	}
}

// unitLines returns the unit's Key=Value settings (comments skipped).
func unitLines(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("xdpsec.service")
	if err != nil {
		t.Fatal(err)
	}
	kv := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			kv[k] = v
		}
	}
	return kv
}

// TestUnitSettings checks the settings the daemon relies on and has
// systemd-analyze verify the unit (with ExecStart pointed at an existing
// binary: the real one is installed at deploy time).
func TestUnitSettings(t *testing.T) {
	kv := unitLines(t)
	for k, want := range map[string]string{
		"ExecStart":            "/usr/local/bin/xdpsec run --config /etc/xdpsec/xdpsec.conf",
		"RuntimeDirectory":     "xdpsec",
		"RuntimeDirectoryMode": "0700",
		"NoNewPrivileges":      "yes",
		"ProtectSystem":        "strict",
		"ReadWritePaths":       "/sys/fs/bpf",
		"AmbientCapabilities":  kv["CapabilityBoundingSet"],
	} {
		if kv[k] != want {
			t.Errorf("%s=%q, want %q", k, kv[k], want)
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("needs systemd-analyze to verify the unit")
	}
	b, err := os.ReadFile("xdpsec.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := strings.Replace(string(b), "ExecStart=/usr/local/bin/xdpsec", "ExecStart=/bin/true", 1)
	path := t.TempDir() + "/xdpsec.service"
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
