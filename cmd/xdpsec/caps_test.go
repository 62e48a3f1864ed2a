package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/capabilities"
	"github.com/xdpsec/xdpsec/capabilities/probe"
	"github.com/xdpsec/xdpsec/internal/control"
	"github.com/xdpsec/xdpsec/internal/testutil"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/caps_shape.golden")

// noDaemon is a socket path where nothing listens.
func noDaemon(t *testing.T) string { return filepath.Join(t.TempDir(), "none", "control.sock") }

func TestCapsCommandLineErrorsAreOneLine(t *testing.T) {
	sock := noDaemon(t)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"caps", "--socket", sock, "--format", "ndis-v2"}, 2, "add --view hardware or --view current"},
		{[]string{"caps", "--socket", sock, "-j", "--format", "ndis-v1", "--view", "current"}, 2, "give one of them"},
		{[]string{"caps", "--socket", sock, "--view", "wishful"}, 2, "want hardware, parameters, current or all"},
		{[]string{"caps", "--socket", sock, "--count", "3"}, 2, "--count only applies to --watch"},
		{[]string{"caps", "--socket", sock, "extra"}, 2, "xdpsec caps set"},
		{[]string{"caps", "set", "--socket", sock}, 2, "at least one PARAM=VALUE"},
		{[]string{"caps", "set", "--socket", sock, "IPsecV2=sometimes"}, 2, "IPsecV2"},
		{[]string{"caps", "set", "--socket", sock, "aes=on"}, 2, "unknown parameter"},
		{[]string{"caps", "set", "--socket", sock, "IPsecV2=esp"}, 1, "caps set needs a running daemon (xdpsec run)"},
	} {
		code, _, stderr := runCLI(t, c.args...)
		first, _, _ := strings.Cut(stderr, "\n")
		if code != c.code || !strings.Contains(first, c.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit %d and %q on the first line", c.args, code, stderr, c.code, c.want)
		}
	}
}

// keyPaths lists every object key path of a JSON document ("a.b.c"),
// arrays as "[]", sorted and unique: the document's shape without values.
func keyPaths(v any, prefix string, out map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			p := prefix + "." + k
			if prefix == "" {
				p = k
			}
			out[p] = true
			keyPaths(e, p, out)
		}
	case []any:
		for _, e := range x {
			keyPaths(e, prefix+"[]", out)
		}
	}
}

func shape(t *testing.T, doc []byte) []string {
	t.Helper()
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, doc)
	}
	m := map[string]bool{}
	keyPaths(v, "", m)
	var out []string
	for k := range m {
		// Map keys that are data, not shape: algorithm names under
		// selfTest and Algorithms.
		if i := strings.Index(k, ".selfTest."); i >= 0 {
			k = k[:i] + ".selfTest.*"
		}
		if i := strings.Index(k, "parameters.Algorithms."); i >= 0 {
			k = k[:i] + "parameters.Algorithms.*"
		}
		out = append(out, k)
	}
	sort.Strings(out)
	return slicesCompact(out)
}

func slicesCompact(s []string) []string {
	var out []string
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func TestCapsLocalJSONShapeIsGolden(t *testing.T) {
	testutil.RequireRoot(t)
	code, out, stderr := runCLI(t, "caps", "--socket", noDaemon(t), "-j")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	got := strings.Join(shape(t, []byte(out)), "\n") + "\n"
	golden := filepath.Join("testdata", "caps_shape.golden")
	if *updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestCapsLocalJSONShapeIsGolden -update once)", err)
	}
	if got != string(want) {
		t.Fatalf("JSON shape changed (a released format): diff the output against %s:\n%s", golden, got)
	}
	// The members the issue names, spelled as NDIS spells them.
	for _, k := range []string{"hardware.v2.IPv6Supported", "hardware.v2.AuthenticationAlgorithms.value",
		"hardware.v2.AuthenticationAlgorithms.flags", "hardware.v1.IPv4AH.Md5", "hardware.v1.Supported.Flags.value",
		"hardware.linux.ethtool.esp-hw-offload", "hardware.linux.xfrmOffload.type", "current.v2.SaOffloadCapacity",
		"parameters.IPsecV2.name", "current.linux.xdpConfig.ESP"} {
		if !strings.Contains(got, k+"\n") {
			t.Errorf("JSON lacks %s", k)
		}
	}
	// --view keeps only that view's key.
	for _, v := range []string{"hardware", "current", "parameters"} {
		_, out, _ := runCLI(t, "caps", "--socket", noDaemon(t), "-j", "--view", v)
		var doc map[string]any
		if err := json.Unmarshal([]byte(out), &doc); err != nil || len(doc) != 1 || doc[v] == nil {
			t.Errorf("--view %s: keys %v, %v", v, reflect.ValueOf(doc).MapKeys(), err)
		}
	}
}

// testDaemon serves caps ops from hub on a fresh socket, as xdpsec run does.
func testDaemon(t *testing.T, hub *capabilities.Hub) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	srv, err := control.Listen(filepath.Join(dir, "control.sock"))
	if err != nil {
		t.Fatal(err)
	}
	capabilities.ServeControl(srv, hub)
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	return srv.Path()
}

// runningHub is the state of the loaded XDP program and SA map, real
// self-tests, and an engine as a running one declares itself.
func runningHub(t *testing.T, link string) *capabilities.Hub {
	t.Helper()
	in, release, err := probe.Loaded()
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	in.Link = link
	in.Engine = &capabilities.Engine{Send: true, Receive: true, Transport: true, Tunnel: true, ESN: true, AhEspCombined: true,
		MaxReplayWindow: 1024, Queues: 1, AFXDPMode: capabilities.AFXDPCopy}
	st, err := capabilities.Probe(in)
	if err != nil {
		t.Fatal(err)
	}
	return capabilities.NewHub(st)
}

// tableValues reads the NDIS_IPSEC_OFFLOAD_V2 or _V1 block of a one-column
// caps table: member name -> value text.
func tableValues(t *testing.T, table, title string) map[string]string {
	t.Helper()
	out := map[string]string{}
	in := false
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
			if in {
				return out
			}
		case f[0] == title:
			in = true
		case in && !strings.HasPrefix(line, "  "):
			if len(f) != 2 {
				t.Fatalf("table row %q has not one value", line)
			}
			out[f[0]] = f[1]
		}
	}
	t.Fatalf("no %s block in table:\n%s", title, table)
	return nil
}

// memberText renders one decoded member as the table writes it.
func memberText(v reflect.Value) string {
	switch v.Kind() {
	case reflect.Bool:
		if v.Bool() {
			return "TRUE"
		}
		return "FALSE"
	}
	type flagger interface{ Flags() []string }
	if _, ok := v.Interface().(flagger); ok {
		return "0x" + hex.EncodeToString([]byte{byte(v.Uint() >> 24), byte(v.Uint() >> 16), byte(v.Uint() >> 8), byte(v.Uint())})
	}
	return strings.TrimSpace(strings.Repeat(" ", 0) + itoa(v.Uint()))
}

func itoa(u uint64) string { b, _ := json.Marshal(u); return string(b) }

// compareMembers checks every member of the decoded struct against the table.
func compareMembers(t *testing.T, prefix string, v reflect.Value, table map[string]string) {
	t.Helper()
	for i := range v.NumField() {
		name := prefix + v.Type().Field(i).Name
		if v.Field(i).Kind() == reflect.Struct {
			compareMembers(t, name+".", v.Field(i), table)
			continue
		}
		if got, want := table[name], memberText(v.Field(i)); got != want {
			t.Errorf("%s: table says %q, decoded hex says %q", name, got, want)
		}
	}
}

func TestCapsHexDecodesToTheTableAndJSON(t *testing.T) {
	testutil.RequireRoot(t)
	hub := runningHub(t, "")
	sock := testDaemon(t, hub)
	for _, view := range []string{"hardware", "current"} {
		_, table, _ := runCLI(t, "caps", "--socket", sock, "--view", view)
		_, js, _ := runCLI(t, "caps", "--socket", sock, "--view", view, "-j")
		var doc map[string]struct {
			V1 capabilities.IPsecOffloadV1 `json:"v1"`
			V2 capabilities.IPsecOffloadV2 `json:"v2"`
		}
		if err := json.Unmarshal([]byte(js), &doc); err != nil {
			t.Fatalf("%s JSON: %v", view, err)
		}
		for _, f := range []struct {
			format string
			digits int
			title  string
		}{{"ndis-v2", 64, "NDIS_IPSEC_OFFLOAD_V2"}, {"ndis-v1", 56, "NDIS_IPSEC_OFFLOAD_V1"}} {
			code, out, stderr := runCLI(t, "caps", "--socket", sock, "--view", view, "--format", f.format)
			if code != 0 {
				t.Fatalf("%s %s: exit %d %s", view, f.format, code, stderr)
			}
			h := strings.TrimSpace(out)
			if len(h) != f.digits || strings.Count(out, "\n") != 1 {
				t.Fatalf("%s %s: %q is not %d hex digits and a newline", view, f.format, out, f.digits)
			}
			b, err := hex.DecodeString(h)
			if err != nil {
				t.Fatal(err)
			}
			var decoded, fromJSON any
			if f.format == "ndis-v2" {
				var v capabilities.IPsecOffloadV2
				err, decoded, fromJSON = v.UnmarshalBinary(b), &v, doc[view].V2
				if v == (capabilities.IPsecOffloadV2{}) {
					t.Fatalf("%s view is empty: the test proves nothing", view)
				}
			} else {
				var v capabilities.IPsecOffloadV1
				err, decoded, fromJSON = v.UnmarshalBinary(b), &v, doc[view].V1
			}
			if err != nil {
				t.Fatalf("%s %s: decode: %v", view, f.format, err)
			}
			dv := reflect.ValueOf(decoded).Elem()
			if !reflect.DeepEqual(dv.Interface(), fromJSON) {
				t.Errorf("%s %s: hex decodes to %+v, JSON says %+v", view, f.format, dv.Interface(), fromJSON)
			}
			compareMembers(t, "", dv, tableValues(t, table, f.title))
		}
	}
	// The daemon's answer is its state: the hex is the hub's.
	b, _ := hub.State().Current().V2().MarshalBinary()
	if _, out, _ := runCLI(t, "caps", "--socket", sock, "--view", "current", "--format", "ndis-v2"); strings.TrimSpace(out) != hex.EncodeToString(b) {
		t.Fatalf("daemon hex %q, hub %x", out, b)
	}
	// caps set goes to the daemon and shows in the next caps.
	if code, out, stderr := runCLI(t, "caps", "set", "--socket", sock, "IPsecV2=esp", "cbc(des)=on"); code != 0 || !strings.Contains(out, "NDIS_OFFLOAD_PARAMETERS_IPSECV2_ESP_ENABLED") {
		t.Fatalf("caps set: exit %d\n%s%s", code, out, stderr)
	}
	_, js, _ := runCLI(t, "caps", "--socket", sock, "--view", "current", "-j")
	var cur struct {
		Current struct {
			V2 capabilities.IPsecOffloadV2 `json:"v2"`
		} `json:"current"`
	}
	if err := json.Unmarshal([]byte(js), &cur); err != nil {
		t.Fatal(err)
	}
	if cur.Current.V2.Ah || !cur.Current.V2.Esp || cur.Current.V2.EncryptionAlgorithms&capabilities.IPSEC_OFFLOAD_V2_ENCRYPTION_DES_CBC == 0 {
		t.Fatalf("current after caps set: %+v", cur.Current.V2)
	}
	// --link must be the daemon's link.
	if code, _, stderr := runCLI(t, "caps", "--socket", sock, "--link", "eth9"); code != 1 || !strings.Contains(stderr, `serves link "", not "eth9"`) {
		t.Fatalf("--link mismatch: exit %d %q", code, stderr)
	}
}

// lineReader hands out lines a command writes, with a deadline.
type lineReader struct {
	lines chan string
}

func newLineReader(r io.Reader) *lineReader {
	lr := &lineReader{lines: make(chan string, 64)}
	go func() {
		s := bufio.NewScanner(r)
		s.Buffer(make([]byte, 1<<20), 1<<20)
		for s.Scan() {
			lr.lines <- s.Text()
		}
		close(lr.lines)
	}()
	return lr
}

func (lr *lineReader) next(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-lr.lines:
		if !ok {
			t.Fatal("output ended")
		}
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("no output line within 10 s")
	}
	return ""
}

type watchLine struct {
	Seq     uint64 `json:"seq"`
	Reason  string `json:"reason"`
	Detail  string `json:"detail"`
	Current struct {
		V2 capabilities.IPsecOffloadV2 `json:"v2"`
	} `json:"current"`
}

func decodeWatch(t *testing.T, l string) watchLine {
	t.Helper()
	var w watchLine
	if err := json.Unmarshal([]byte(l), &w); err != nil {
		t.Fatalf("watch line %q: %v", l, err)
	}
	return w
}

func TestCapsWatchThroughTheDaemon(t *testing.T) {
	ns := testutil.NewNS(t, "capswatch")
	ns.MustRun(t, "ip", "link", "add", "xc0", "type", "veth", "peer", "name", "xc0p")
	ns.MustRun(t, "ip", "link", "set", "xc0", "up")
	var hub *capabilities.Hub
	if err := ns.Do(func() error { hub = runningHub(t, "xc0"); return nil }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := ns.Handle()
	w, err := capabilities.WatchLink(ctx, hub, "xc0", &h)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	sock := testDaemon(t, hub)

	pr, pw := io.Pipe()
	done := make(chan int, 1)
	var errb bytes.Buffer
	go func() {
		done <- run([]string{"caps", "--socket", sock, "--watch", "-j", "--count", "6", "--view", "current", "--link", "xc0"}, pw, &errb)
		pw.Close()
	}()
	lr := newLineReader(pr)
	expect := func(reason string) watchLine {
		t.Helper()
		wl := decodeWatch(t, lr.next(t))
		if wl.Reason != reason {
			t.Fatalf("watch: seq %d reason %q detail %q, want %s", wl.Seq, wl.Reason, wl.Detail, reason)
		}
		return wl
	}
	first := expect("probe")
	if !first.Current.V2.Ah {
		t.Fatalf("probe state has no AH: %+v", first.Current.V2)
	}
	if code, _, stderr := runCLI(t, "caps", "set", "--socket", sock, "IPsecV2=esp"); code != 0 {
		t.Fatalf("caps set: %s", stderr)
	}
	if wl := expect("parameters-set"); wl.Current.V2.Ah || !wl.Current.V2.Esp {
		t.Fatalf("after IPsecV2=esp: %+v", wl.Current.V2)
	}
	ns.MustRun(t, "ip", "link", "set", "xc0", "mtu", "1400")
	if wl := expect("mtu-change"); !strings.Contains(wl.Detail, "1400") {
		t.Fatalf("mtu detail %q", wl.Detail)
	}
	ns.MustRun(t, "ip", "link", "set", "xc0", "down")
	expect("link-down")
	ns.MustRun(t, "ip", "link", "set", "xc0", "up")
	expect("link-up")
	hub.EngineStopped("engine exited")
	if wl := expect("engine-stop"); wl.Current.V2 != (capabilities.IPsecOffloadV2{}) {
		t.Fatalf("engine stop leaves %+v on", wl.Current.V2)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("caps --watch exit %d: %s", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("caps --watch --count 6 did not stop after 6 changes")
	}
}

func TestCapsLocalWatchFollowsTheLink(t *testing.T) {
	ns := testutil.NewNS(t, "capslocal")
	ns.MustRun(t, "ip", "link", "add", "xc1", "type", "veth", "peer", "name", "xc1p")
	ns.MustRun(t, "ip", "link", "set", "xc1", "up")
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	var errb bytes.Buffer
	go func() {
		// The local watch reads the link and subscribes to netlink in the
		// namespace of the thread that runs it.
		var code int
		_ = ns.Do(func() error {
			code = run([]string{"caps", "--local", "--link", "xc1", "--watch", "--count", "3", "--format", "ndis-v2", "--view", "hardware"}, pw, &errb)
			return nil
		})
		done <- code
		pw.Close()
	}()
	lr := newLineReader(pr)
	fields := func(want string) {
		t.Helper()
		l := lr.next(t)
		f := strings.Fields(l)
		if len(f) != 3 || f[1] != want || len(f[2]) != 64 {
			t.Fatalf("watch line %q: want SEQ %s HEX64", l, want)
		}
	}
	fields("probe")
	ns.MustRun(t, "ip", "link", "set", "xc1", "mtu", "1280")
	fields("mtu-change")
	ns.MustRun(t, "ip", "link", "set", "xc1", "down")
	fields("link-down")
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("local watch did not stop after --count 3")
	}
}
