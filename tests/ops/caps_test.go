package ops

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/deploy"
	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/internal/testutil/xdpsectest"
)

// systemdMemlock is systemd's default LimitMEMLOCK for services (8 MiB
// since v250; Debian 12 ships 252), given to the daemon so that a test run
// from an unlimited root shell sees what the service sees.
const systemdMemlock = "8388608"

// umemFrames makes each AF_XDP socket's UMEM 16 MiB (8192 2 KiB frames),
// what two queues at the default size need: more than LimitMEMLOCK, so
// CAP_IPC_LOCK is needed, as on a real two-queue NIC.
const umemFrames = "frames 8192"

// unitCaps is the shipped unit's capability set.
func unitCaps(t *testing.T) []string {
	t.Helper()
	caps, err := deploy.UnitCapabilities()
	if err != nil {
		t.Fatal(err)
	}
	return caps
}

// withCaps is the command prefix that runs the daemon as the unit does:
// uid 0 with the bounding set caps (so exec leaves exactly those
// capabilities, as systemd's CapabilityBoundingSet= and
// AmbientCapabilities= do for root) and LimitMEMLOCK at systemd's default.
func withCaps(caps []string) []string {
	var set []string
	for _, c := range caps {
		set = append(set, "+"+strings.TrimPrefix(strings.ToLower(c), "cap_"))
	}
	return []string{"prlimit", "--memlock=" + systemdMemlock + ":" + systemdMemlock, "--",
		"setpriv", "--bounding-set=-all," + strings.Join(set, ","), "--inh-caps=-all", "--"}
}

func requireCapTools(t *testing.T) {
	t.Helper()
	requireTools(t, "setpriv", "prlimit")
}

// TestDaemonWithUnitCapabilities runs both daemons of the tunnel with
// exactly the unit's capabilities and pings through it both ways.
func TestDaemonWithUnitCapabilities(t *testing.T) {
	testutil.RequireRoot(t)
	requireCapTools(t)
	caps := unitCaps(t)
	p := testutil.NewVethPair(t)
	pin := xdpsectest.MountBPFFS(t)
	k := newKeys(t)
	confA := writeConfig(t, "a", k, "pin "+pin, umemFrames)
	confB := writeConfig(t, "b", k, "pin "+pin, umemFrames)
	a := xdpsectest.StartDaemon(t, p.A, confA, xdpsectest.Options{Wrap: withCaps(caps)})
	b := xdpsectest.StartDaemon(t, p.B, confB, xdpsectest.Options{Wrap: withCaps(caps)})
	// The daemon really runs with the unit's set and nothing more.
	for _, d := range []*xdpsectest.Daemon{a, b} {
		status, err := os.ReadFile("/proc/" + strconv.Itoa(d.PID()) + "/status")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
				t.Logf("daemon pid %d CapEff %s", d.PID(), strings.TrimSpace(v))
				if got, want := strings.TrimSpace(v), capMask(caps); got != want {
					t.Errorf("daemon CapEff %s, want %s (%v)", got, want, caps)
				}
			}
		}
	}
	xdpsectest.Ping(t, p.A, "198.51.100.2", 3, a, b)
	xdpsectest.Ping(t, p.B, "2001:db8:a::1", 3, a, b)
	if st := b.Stats(); st.InVerdicts["ok"] < 3 || st.Counters["in-delivered"] < 3 {
		t.Errorf("B did not decrypt the pings: %v %v", st.InVerdicts, st.Counters)
	}
	// The capabilities probe must work with the unit's set too (it reads
	// the program's published shapes without CAP_SYS_ADMIN).
	for _, d := range []*xdpsectest.Daemon{a, b} {
		if log := d.Stderr(); strings.Contains(log, "capabilities probe failed") {
			t.Errorf("daemon pid %d: capabilities probe failed under the unit's capabilities:\n%s", d.PID(), log)
		}
	}
}

// TestDaemonWithoutEachCapability starts the daemon with the unit's set
// minus one capability at a time: it must exit non-zero with one line that
// names what failed and the capability to grant.
func TestDaemonWithoutEachCapability(t *testing.T) {
	testutil.RequireRoot(t)
	requireCapTools(t)
	caps := unitCaps(t)
	// The step that fails without each capability, as the daemon says it.
	want := map[string][]string{
		"CAP_BPF":       {"attach xdp to", "CAP_BPF"},
		"CAP_NET_ADMIN": {"attach xdp to", "CAP_NET_ADMIN"},
		"CAP_NET_RAW":   {"open AF_XDP socket", "CAP_NET_RAW"},
		"CAP_IPC_LOCK":  {"open AF_XDP socket", "CAP_IPC_LOCK"},
	}
	for _, c := range caps {
		t.Run(c, func(t *testing.T) {
			w, ok := want[c]
			if !ok {
				t.Fatalf("the unit grants %s but no test shows what needs it", c)
			}
			p := testutil.NewVethPair(t)
			conf := writeConfig(t, "b", newKeys(t), "pin "+xdpsectest.MountBPFFS(t), umemFrames)
			less := slices.DeleteFunc(slices.Clone(caps), func(s string) bool { return s == c })
			d := xdpsectest.LaunchDaemon(t, p.B, conf, xdpsectest.Options{Wrap: withCaps(less)})
			if !d.Wait(20 * time.Second) {
				t.Fatalf("without %s the daemon still runs after 20 s:\n%s", c, d.Stderr())
			}
			msg := strings.TrimSpace(d.Stderr())
			t.Logf("without %s: %s", c, msg)
			if d.ExitErr() == nil {
				t.Errorf("without %s the daemon exited 0", c)
			}
			// The log may hold lifecycle lines; the error is the last line
			// and the only one from the command.
			last := msg[strings.LastIndexByte(msg, '\n')+1:]
			if !strings.HasPrefix(last, "xdpsec run: ") || strings.Count(msg, "xdpsec run: ") != 1 {
				t.Errorf("without %s: want one last line 'xdpsec run: ...', got:\n%s", c, msg)
			}
			for _, s := range w {
				if !strings.Contains(last, s) {
					t.Errorf("without %s: the message lacks %q", c, s)
				}
			}
		})
	}
}

// capMask renders caps as /proc/PID/status shows CapEff (16 hex digits).
func capMask(caps []string) string {
	bits := map[string]uint{"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}
	var m uint64
	for _, c := range caps {
		b, ok := bits[c]
		if !ok {
			return "unknown capability " + c
		}
		m |= 1 << b
	}
	return fmt.Sprintf("%016x", m)
}
