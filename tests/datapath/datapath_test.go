// Package datapath holds xdpsec's end-to-end tests of the XDP datapath:
// they build the xdpsec binary and run it as an operator would, inside
// fresh network namespaces joined by a veth pair, with traffic crafted by
// scapy (traffic.py) from the peer namespace.
//
// xdpsec runs under `nsenter --net=/run/netns/NAME`, not `ip netns exec`:
// the latter gives the process a private /sys without the system's BPF
// filesystem, and xdpsec refuses to pin there (TestBadInput covers it).
package datapath

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

// xdpsecBin is the binary TestMain builds.
var xdpsecBin string

const pinRoot = "/sys/fs/bpf/xdpsec" // the default, as a user has it

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		// Every test here needs root; they skip by themselves.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "xdpsec-datapath-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	xdpsecBin = filepath.Join(dir, "xdpsec")
	out, err := exec.Command("go", "build", "-o", xdpsecBin, "github.com/xdpsec/xdpsec/cmd/xdpsec").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build xdpsec: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// pair is a veth pair whose end A (where xdpsec attaches) has a name of
// this test alone, so the default pin directory /sys/fs/bpf/xdpsec/<if>
// cannot collide with another test or package running at the same time.
type pair struct {
	*testutil.VethPair
}

func newPair(t *testing.T) pair {
	t.Helper()
	testutil.RequireRoot(t)
	if xdpsecBin == "" {
		t.Fatal("xdpsec binary not built")
	}
	var created []string
	t.Cleanup(func() { // registered first: runs after the namespaces are gone
		for _, n := range testutil.Leaked() {
			if slices.Contains(created, n) {
				t.Errorf("namespace %s left behind", n)
			}
		}
	})
	p := pair{testutil.NewVethPair(t)}
	created = append(created, p.A.Name, p.B.Name)
	var rnd [3]byte
	rand.Read(rnd[:])
	name := "xd" + hex.EncodeToString(rnd[:])
	// Renaming needs the link down; IPv4 addresses stay (IPv6 ones go,
	// and the tests here send IPv6 at layer 2 only).
	p.A.MustRun(t, "ip", "link", "set", p.IfA, "down")
	p.A.MustRun(t, "ip", "link", "set", p.IfA, "name", name)
	p.A.MustRun(t, "ip", "link", "set", name, "up")
	p.IfA = name
	t.Cleanup(func() {
		// A failing test must not leave pins in the shared bpffs (the
		// namespace and the link go with the test; pins would not).
		dir := filepath.Join(pinRoot, name)
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("pins left behind at %s", dir)
			exec.Command(xdpsecBin, "detach", "--link", name).Run() // link gone: removes the pins
			os.RemoveAll(dir)
		}
	})
	return p
}

// result is one xdpsec run.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// run runs cmd, bounded to 30 s, and returns how it ended.
func run(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not finish within 30 s", cmd)
	}
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v", cmd, err)
	}
	return r
}

// xdpsecIn returns the command running xdpsec with args in ns's network
// namespace (and the caller's mount namespace, so /sys/fs/bpf is shared).
func xdpsecIn(ns *testutil.NS, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=/run/netns/" + ns.Name, xdpsecBin}, args...)...)
}

// mustXdpsec runs xdpsec in ns and fails the test unless it exits 0.
func mustXdpsec(t *testing.T, ns *testutil.NS, args ...string) string {
	t.Helper()
	r := run(t, xdpsecIn(ns, args...))
	if r.code != 0 {
		t.Fatalf("xdpsec %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// status is the part of `xdpsec status -j` the tests read.
type status struct {
	Interface string `json:"interface"`
	Mode      string `json:"mode"`
	ProgramID uint32 `json:"program_id"`
	LinkID    uint32 `json:"link_id"`
	PinPath   string `json:"pin_path"`
	Config    struct {
		NATTPorts []uint16 `json:"nat_t_ports"`
	} `json:"config"`
	Counters map[string]uint64 `json:"counters"`
	SAs      []struct {
		SPI     string `json:"spi"`
		Proto   string `json:"proto"`
		Packets uint64 `json:"packets"`
		Bytes   uint64 `json:"bytes"`
	} `json:"sas"`
}

func readStatus(t *testing.T, ns *testutil.NS, ifname string) status {
	t.Helper()
	out := mustXdpsec(t, ns, "status", "--link", ifname, "-j")
	var st status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status -j is not JSON: %v: %q", err, out)
	}
	return st
}

// xdpProgOn returns "id N name NAME" from the `prog/xdp` line of
// `ip -d link show` (what an operator would look at), "" when the link has
// no XDP program.
func xdpProgOn(t *testing.T, ns *testutil.NS, ifname string) string {
	t.Helper()
	out := ns.MustRun(t, "ip", "-d", "link", "show", ifname)
	_, rest, ok := strings.Cut(out, "prog/xdp ")
	if !ok {
		return ""
	}
	if f := strings.Fields(rest); len(f) >= 4 {
		return strings.Join(f[:4], " ")
	}
	return rest
}

// assertDetached checks that ifname carries no XDP program and that no pin
// is left for it.
func assertDetached(t *testing.T, ns *testutil.NS, ifname string) {
	t.Helper()
	if p := xdpProgOn(t, ns, ifname); p != "" {
		t.Errorf("%s still has an XDP program: %s", ifname, p)
	}
	if _, err := os.Stat(filepath.Join(pinRoot, ifname)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory %s/%s still there (%v)", pinRoot, ifname, err)
	}
}

// script returns the path of traffic.py and skips without scapy.
func script(t *testing.T) string {
	t.Helper()
	if err := exec.Command("/usr/bin/python3", "-c", "import scapy.all").Run(); err != nil {
		t.Skip("needs /usr/bin/python3 with scapy (scripts/setup.sh installs python3-scapy)")
	}
	p, err := filepath.Abs("traffic.py")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// saArgs returns "--sa SPEC" for every SA traffic.py's expectations assume,
// and the extra NAT-T port they use.
func saArgs(t *testing.T, py string) []string {
	t.Helper()
	out, err := exec.Command("/usr/bin/python3", py, "sas").Output()
	if err != nil {
		t.Fatalf("traffic.py sas: %v", err)
	}
	args := []string{"--nat-t-port", "4501"}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		args = append(args, "--sa", l)
	}
	return args
}

type expectation struct {
	Index   int    `json:"index"`
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
	SPI     string `json:"spi,omitempty"`
}

var (
	pcapOnce sync.Once
	pcapPath string
	pcapWant []expectation
	pcapErr  error
)

// makePcap returns the pcap of traffic.py's packets (written once per test
// binary: scapy takes seconds to start) and the expected verdict of each.
func makePcap(t *testing.T, py string) (string, []expectation) {
	t.Helper()
	pcapOnce.Do(func() {
		dir := filepath.Dir(xdpsecBin)
		pcapPath = filepath.Join(dir, "traffic.pcap")
		expPath := filepath.Join(dir, "traffic.jsonl")
		if out, err := exec.Command("/usr/bin/python3", py, "pcap", pcapPath, expPath).CombinedOutput(); err != nil {
			pcapErr = fmt.Errorf("traffic.py pcap: %v: %s", err, out)
			return
		}
		b, err := os.ReadFile(expPath)
		if err != nil {
			pcapErr = err
			return
		}
		pcapWant = parseJSONLines(t, string(b))
	})
	if pcapErr != nil {
		t.Fatal(pcapErr)
	}
	return pcapPath, pcapWant
}

func parseJSONLines(t *testing.T, s string) []expectation {
	t.Helper()
	var out []expectation
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		var e expectation
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("not a classify JSON line: %v: %q", err, sc.Text())
		}
		out = append(out, e)
	}
	return out
}

// waitCounters polls status until the IPsec reason counters reach want
// (bounded: 50 polls, 5 s) and returns the last status.
func waitCounters(t *testing.T, ns *testutil.NS, ifname string, want map[string]uint64) status {
	t.Helper()
	var st status
	deadline := time.Now().Add(5 * time.Second)
	for range 50 {
		st = readStatus(t, ns, ifname)
		done := true
		for r, n := range want {
			if r != "pass-other" && st.Counters[r] < n {
				done = false
			}
		}
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return st
}

func TestAttachTrafficStatusDetach(t *testing.T) {
	py := script(t)
	for _, mode := range []string{"native", "generic"} {
		t.Run(mode, func(t *testing.T) {
			p := newPair(t)
			args := append([]string{"attach", "--link", p.IfA, "--mode", mode}, saArgs(t, py)...)
			out := mustXdpsec(t, p.A, args...)
			if !strings.Contains(out, "xdpsec attached on "+p.IfA+": "+mode+" mode") || !strings.Contains(out, "SAs programmed: 5") {
				t.Errorf("attach said %q", out)
			}
			// The attach process has exited: the pins keep the program.
			if xdpProgOn(t, p.A, p.IfA) == "" {
				t.Fatalf("no XDP program on %s after attach exited", p.IfA)
			}
			st := readStatus(t, p.A, p.IfA)
			if st.Mode != mode || st.ProgramID == 0 || st.LinkID == 0 || st.PinPath != filepath.Join(pinRoot, p.IfA) ||
				!slices.Equal(st.Config.NATTPorts, []uint16{4500, 4501}) || len(st.SAs) != 5 {
				t.Errorf("status after attach: %+v", st)
			}
			if ip := xdpProgOn(t, p.A, p.IfA); !strings.HasPrefix(ip, fmt.Sprintf("id %d name xdpsec_", st.ProgramID)) {
				t.Errorf("ip link shows %q, status says program %d", ip, st.ProgramID)
			}
			base := st.Counters

			// Send every crafted packet 3 times from the peer, at layer 2.
			const rounds = 3
			r := run(t, p.B.Command("/usr/bin/python3", py, "send", p.IfB, p.MACA.String(), fmt.Sprint(rounds)))
			if r.code != 0 {
				t.Fatalf("traffic.py send: %s", r)
			}
			var sent map[string]uint64
			if err := json.Unmarshal([]byte(r.stdout), &sent); err != nil {
				t.Fatalf("traffic.py send printed %q: %v", r.stdout, err)
			}
			st = waitCounters(t, p.A, p.IfA, sent)
			for reason, n := range sent {
				got := st.Counters[reason] - base[reason]
				// pass-other also counts what the kernels send on their
				// own (IPv6 neighbour and router traffic): at least.
				if got != n && !(reason == "pass-other" && got >= n) {
					t.Errorf("counter %s = %d, sent %d", reason, got, n)
				}
			}
			for reason, n := range st.Counters {
				if _, ok := sent[reason]; !ok && n != base[reason] {
					t.Errorf("counter %s moved by %d, sent none", reason, n-base[reason])
				}
			}
			// Per-SA counters: every packet that matched the SA, whatever
			// the decision (state-mismatch included).
			_, exp := makePcap(t, py)
			perSA := map[string]uint64{}
			for _, e := range exp {
				if e.SPI != "" {
					perSA[e.SPI] += rounds
				}
			}
			for _, sa := range st.SAs {
				if sa.Packets != perSA[sa.SPI] || sa.Bytes < sa.Packets*28 {
					t.Errorf("SA %s %s: %d packets %d bytes, want %d packets", sa.Proto, sa.SPI, sa.Packets, sa.Bytes, perSA[sa.SPI])
				}
			}
			// The text form shows the same numbers.
			text := mustXdpsec(t, p.A, "status", "--link", p.IfA)
			if !strings.Contains(text, fmt.Sprintf("steer-fallback  %d", st.Counters["steer-fallback"])) &&
				!strings.Contains(text, fmt.Sprintf("steer-fallback %d", st.Counters["steer-fallback"])) {
				t.Errorf("status text lacks steer-fallback %d:\n%s", st.Counters["steer-fallback"], text)
			}
			p.B.MustRun(t, "ping", "-c", "1", "-W", "2", p.IPv4A.String())

			out = mustXdpsec(t, p.A, "detach", "--link", p.IfA)
			if !strings.Contains(out, "detached from "+p.IfA) {
				t.Errorf("detach said %q", out)
			}
			assertDetached(t, p.A, p.IfA)
			p.B.MustRun(t, "ping", "-c", "1", "-W", "2", p.IPv4A.String())
		})
	}
}

// TestSIGKILLMidAttach kills `xdpsec attach` at staggered moments of its
// run (before, while and after it loads, attaches and pins). Whatever the
// moment, the interface keeps carrying traffic and the next attach and
// detach succeed and leave nothing behind. (That the attachment outlives
// the attach process is TestAttachTrafficStatusDetach's premise; the
// loader's own test kills a long-lived process holding the link.)
func TestSIGKILLMidAttach(t *testing.T) {
	p := newPair(t)
	// Loading and attaching take about 50-100 ms here; kill before, during
	// and after.
	for _, ms := range []int{0, 10, 30, 45, 55, 65, 75, 85, 95, 110, 130, 160} {
		delay := time.Duration(ms) * time.Millisecond
		cmd := xdpsecIn(p.A, "attach", "--link", p.IfA, "--sa", "src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x1001")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		cmd.Process.Kill() // SIGKILL to nsenter's PID: nsenter execs xdpsec in place
		cmd.Wait()
		prog := xdpProgOn(t, p.A, p.IfA)
		if _, err := p.B.Run("ping", "-c", "1", "-W", "2", p.IPv4A.String()); err != nil {
			t.Fatalf("killed after %v (XDP: %q): the link no longer carries traffic: %v", delay, prog, err)
		}
		mustXdpsec(t, p.A, "attach", "--link", p.IfA)
		if st := readStatus(t, p.A, p.IfA); st.ProgramID == 0 {
			t.Fatalf("killed after %v: attach then status: %+v", delay, st)
		}
		mustXdpsec(t, p.A, "detach", "--link", p.IfA)
		assertDetached(t, p.A, p.IfA)
		t.Logf("killed after %v: XDP was %q; recovered", delay, prog)
	}
}

func TestClassifyPcap(t *testing.T) {
	testutil.RequireRoot(t)
	py := script(t)
	pcapPath, want := makePcap(t, py)
	if len(want) < 25 {
		t.Fatalf("traffic.py made %d packets", len(want))
	}
	args := append([]string{"classify", "--pcap", pcapPath, "--json"}, saArgs(t, py)...)
	r := run(t, exec.Command(xdpsecBin, args...))
	if r.code != 0 {
		t.Fatalf("classify: %s", r)
	}
	got := parseJSONLines(t, r.stdout)
	if len(got) != len(want) {
		t.Fatalf("classify printed %d lines for %d packets:\n%s", len(got), len(want), r.stdout)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("packet %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	// Exact key order, as the issue gives it.
	if first := strings.SplitN(r.stdout, "\n", 2)[0]; !strings.HasPrefix(first, `{"index":0,"verdict":"steer","reason":"steer-fallback","spi":"0x`) {
		t.Errorf("first line %q", first)
	}

	// With UDP-ESP switched off, the NAT-T packets of known SAs pass as
	// disabled-class (also the one with a bad IPv4 header checksum: the
	// checksum is checked only on what would be steered); nothing else
	// changes.
	r = run(t, exec.Command(xdpsecBin, append(args, "--off", "udp-esp")...))
	if r.code != 0 {
		t.Fatalf("classify --off udp-esp: %s", r)
	}
	off := parseJSONLines(t, r.stdout)
	changed := 0
	for i := range want {
		w := want[i]
		if (w.Reason == "steer-fallback" || w.Reason == "pass-unparsed") && (w.SPI == "0x00002002" || w.SPI == "0x00005005") {
			w.Verdict, w.Reason = "pass", "disabled-class"
			changed++
		}
		if i < len(off) && off[i] != w {
			t.Errorf("--off udp-esp, packet %d: got %+v, want %+v", i, off[i], w)
		}
	}
	if changed != 3 || len(off) != len(want) {
		t.Errorf("--off udp-esp: %d lines, %d changed", len(off), changed)
	}

	// Without SAs every IPsec packet is no-state, and the text form ends
	// with a summary.
	r = run(t, exec.Command(xdpsecBin, "classify", "--pcap", pcapPath))
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("%d packets: 0 steer", len(want))) {
		t.Errorf("classify without SAs: %s", r)
	}
}

// oneLineError checks a failed run: exit code, and a first stderr line
// "xdpsec CMD: ..." containing every string of want; a usage error may add
// the help hint as a second line, nothing else.
func oneLineError(t *testing.T, r result, code int, want ...string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if r.code != code || !strings.HasPrefix(lines[0], "xdpsec ") || len(lines) > 2 ||
		len(lines) == 2 && !strings.HasPrefix(lines[1], "run 'xdpsec help ") {
		t.Errorf("want exit %d and one error line: %s", code, r)
		return
	}
	for _, w := range want {
		if !strings.Contains(lines[0], w) {
			t.Errorf("error %q lacks %q", lines[0], w)
		}
	}
}

func TestBadInput(t *testing.T) {
	p := newPair(t)
	dir := t.TempDir()

	t.Run("missing link", func(t *testing.T) {
		oneLineError(t, run(t, xdpsecIn(p.A, "attach", "--link", "nosuch0")), 1, "nosuch0", "not found")
		assertDetached(t, p.A, p.IfA)
		if _, err := os.Stat(filepath.Join(pinRoot, "nosuch0")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pins for nosuch0: %v", err)
		}
		oneLineError(t, run(t, xdpsecIn(p.A, "detach", "--link", "nosuch0")), 1, "nosuch0")
		oneLineError(t, run(t, xdpsecIn(p.A, "status", "--link", "nosuch0")), 1, "nosuch0")
	})
	t.Run("not attached", func(t *testing.T) {
		oneLineError(t, run(t, xdpsecIn(p.A, "detach", "--link", p.IfA)), 1, "not attached")
		oneLineError(t, run(t, xdpsecIn(p.A, "status", "--link", p.IfA)), 1, "not attached")
	})
	t.Run("usage", func(t *testing.T) {
		oneLineError(t, run(t, xdpsecIn(p.A, "attach")), 2, "--link")
		oneLineError(t, run(t, xdpsecIn(p.A, "attach", "--link", p.IfA, "--mode", "turbo")), 2, "turbo")
		oneLineError(t, run(t, xdpsecIn(p.A, "attach", "--link", p.IfA, "--nat-t-port", "500")), 2, "500")
		oneLineError(t, run(t, exec.Command(xdpsecBin, "classify")), 2, "--pcap")
		assertDetached(t, p.A, p.IfA)
	})
	t.Run("bad SPEC", func(t *testing.T) {
		const key = "0x0102030405060708090a0b0c0d0e0f10111213" // 152 bits: wrong size
		for _, spec := range []string{
			"src 192.0.2.2 dst 192.0.2.1 proto esp",         // no spi
			"src 192.0.2.2 dst 192.0.2.1 proto gre spi 0x1", // no such proto
			"src 192.0.2.2 dst 2001:db8::1 proto esp spi 0x1001",
			"src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x1001 aead rfc4106(gcm(aes)) " + key + " 128",
			"src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x1001 'unterminated",
		} {
			r := run(t, xdpsecIn(p.A, "attach", "--link", p.IfA, "--sa", spec))
			oneLineError(t, r, 2, "--sa #1")
			if strings.Contains(r.stderr, key[2:]) {
				t.Errorf("error shows key bytes: %q", r.stderr)
			}
			oneLineError(t, run(t, exec.Command(xdpsecBin, "classify", "--pcap", "/dev/null", "--sa", spec)), 2, "--sa #1")
		}
		assertDetached(t, p.A, p.IfA)
	})
	t.Run("not a pcap", func(t *testing.T) {
		text := filepath.Join(dir, "notes.txt")
		os.WriteFile(text, []byte("these are not packets\n"), 0o600)
		oneLineError(t, run(t, exec.Command(xdpsecBin, "classify", "--pcap", text)), 1, "notes.txt", "not a pcap")
		oneLineError(t, run(t, exec.Command(xdpsecBin, "classify", "--pcap", filepath.Join(dir, "missing.pcap"))), 1, "missing.pcap")
	})
	t.Run("truncated pcap", func(t *testing.T) {
		py := script(t)
		pcapPath, _ := makePcap(t, py)
		b, _ := os.ReadFile(pcapPath)
		cut := filepath.Join(dir, "cut.pcap")
		os.WriteFile(cut, b[:len(b)-10], 0o600)
		r := run(t, exec.Command(xdpsecBin, "classify", "--pcap", cut, "--json"))
		oneLineError(t, r, 1, "truncated")
		if n := strings.Count(r.stdout, "\n"); n == 0 {
			t.Errorf("no packet before the cut was reported")
		}
	})
	t.Run("foreign program", func(t *testing.T) {
		// Another tool's program, attached the way an operator would.
		obj := foreignObject(t)
		p.A.MustRun(t, "ip", "link", "set", "dev", p.IfA, "xdpgeneric", "obj", obj, "sec", "xdp")
		before := xdpProgOn(t, p.A, p.IfA)
		if before == "" {
			t.Fatal("foreign program not attached")
		}
		oneLineError(t, run(t, xdpsecIn(p.A, "attach", "--link", p.IfA)), 1, "foreign XDP program", "--force")
		if after := xdpProgOn(t, p.A, p.IfA); after != before {
			t.Errorf("refused attach changed the link's program: %q -> %q", before, after)
		}
		if _, err := os.Stat(filepath.Join(pinRoot, p.IfA)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("refused attach left pins: %v", err)
		}
		mustXdpsec(t, p.A, "attach", "--link", p.IfA, "--force", "--mode", "generic")
		if after := xdpProgOn(t, p.A, p.IfA); after == before || after == "" {
			t.Errorf("--force: link program %q (foreign was %q)", after, before)
		}
		mustXdpsec(t, p.A, "detach", "--link", p.IfA)
		assertDetached(t, p.A, p.IfA)
	})
	t.Run("missing capability", func(t *testing.T) {
		if _, err := exec.LookPath("setpriv"); err != nil {
			t.Skip("needs setpriv (util-linux)")
		}
		for _, c := range []struct {
			drop string
			want []string
		}{
			{"-bpf,-sys_admin,-net_admin", []string{"CAP_BPF and CAP_NET_ADMIN"}},
			{"-net_admin,-sys_admin", []string{"lacks CAP_NET_ADMIN"}},
			{"-bpf,-sys_admin", []string{"lacks CAP_BPF"}},
		} {
			priv := func(args ...string) *exec.Cmd {
				return exec.Command("nsenter", append([]string{"--net=/run/netns/" + p.A.Name, "setpriv", "--bounding-set=" + c.drop, "--inh-caps=-all", xdpsecBin}, args...)...)
			}
			oneLineError(t, run(t, priv("attach", "--link", p.IfA)), 1, append([]string{"not permitted"}, c.want...)...)
			assertDetached(t, p.A, p.IfA)
			if t.Failed() {
				run(t, xdpsecIn(p.A, "detach", "--link", p.IfA))
				return
			}
			py := script(t)
			pcapPath, _ := makePcap(t, py)
			oneLineError(t, run(t, priv("classify", "--pcap", pcapPath)), 1, append([]string{"not permitted"}, c.want...)...)
		}
	})
	t.Run("ip netns exec", func(t *testing.T) {
		r := run(t, p.A.Command(xdpsecBin, "attach", "--link", p.IfA))
		oneLineError(t, r, 1, "ip netns exec", "nsenter --net=/run/netns/"+p.A.Name)
		assertDetached(t, p.A, p.IfA)
	})
}

// foreignObject compiles a minimal XDP_PASS program with clang, an ELF
// object `ip link set ... xdp obj` can attach: a program that is not
// xdpsec's.
func foreignObject(t *testing.T) string {
	t.Helper()
	clang, err := exec.LookPath("clang-19")
	if err != nil {
		t.Skip("needs clang-19 to build a foreign XDP program (scripts/setup.sh installs it)")
	}
	dir := t.TempDir()
	src, obj := filepath.Join(dir, "foreign.c"), filepath.Join(dir, "foreign.o")
	os.WriteFile(src, []byte(`__attribute__((section("xdp"), used)) int foreign_pass(void *ctx) { return 2; }
char _license[] __attribute__((section("license"), used)) = "GPL";
`), 0o600)
	if out, err := exec.Command(clang, "-O2", "-target", "bpf", "-c", src, "-o", obj).CombinedOutput(); err != nil {
		t.Fatalf("clang: %v: %s", err, out)
	}
	return obj
}

// TestNoBPFChild is the helper of TestKernelWithoutBPF: it makes the bpf(2)
// system call fail with ENOSYS, as on a kernel built without
// CONFIG_BPF_SYSCALL, and becomes xdpsec.
func TestNoBPFChild(t *testing.T) {
	args := os.Getenv("XDPSEC_NOBPF_ARGS")
	if args == "" {
		t.Skip("helper for TestKernelWithoutBPF")
	}
	runtime.LockOSThread() // the filter and the exec belong to this thread
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_BPF, Jt: 0, Jf: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Println("no_new_privs:", err)
		os.Exit(3)
	}
	if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&prog)), 0, 0); err != nil {
		fmt.Println("seccomp:", err)
		os.Exit(3)
	}
	argv := append([]string{os.Getenv("XDPSEC_NOBPF_BIN")}, strings.Split(args, "\x1f")...)
	err := unix.Exec(argv[0], argv, os.Environ())
	fmt.Println("exec:", err)
	os.Exit(3)
}

func TestKernelWithoutBPF(t *testing.T) {
	testutil.RequireRoot(t)
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Skip("seccomp filter written for amd64/arm64 syscall numbers")
	}
	p := newPair(t)
	py := script(t)
	pcapPath, _ := makePcap(t, py)
	for _, args := range [][]string{
		{"attach", "--link", p.IfA},
		{"classify", "--pcap", pcapPath},
	} {
		cmd := exec.Command("nsenter", "--net=/run/netns/"+p.A.Name, os.Args[0], "-test.run=^TestNoBPFChild$")
		cmd.Env = append(os.Environ(), "XDPSEC_NOBPF_ARGS="+strings.Join(args, "\x1f"), "XDPSEC_NOBPF_BIN="+xdpsecBin)
		r := run(t, cmd)
		if r.code == 3 {
			t.Fatalf("helper failed: %s", r)
		}
		oneLineError(t, r, 1, "kernel lacks the needed BPF support")
		assertDetached(t, p.A, p.IfA)
	}
}
