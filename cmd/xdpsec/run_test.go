package main

import (
	"encoding/json"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/capabilities"
	"github.com/xdpsec/xdpsec/internal/control"
	"github.com/xdpsec/xdpsec/internal/testutil"
	"github.com/xdpsec/xdpsec/internal/testutil/xdpsectest"
	"github.com/xdpsec/xdpsec/loader"
)

// Test SAs of TestRunOffloadFromConfig (keys used nowhere else).
const (
	offloadESP = "ip xfrm state add src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x3001 mode tunnel aead 'rfc4106(gcm(aes))' 0x6c6b6a696867666564636261605f5e5d5c5b5a59 128"
	offloadDES = "ip xfrm state add src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x3002 mode tunnel enc 'cbc(des)' 0x1f2e3d4c5b6a7988 auth-trunc 'hmac(sha256)' 0x8877665544332211aabbccddeeff00112233445566778899aabbccddeeff0011 128"
	offloadOut = "ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x3004 mode tunnel aead 'rfc4106(gcm(aes))' 0x5c5b5a595857565554535251504f4e4d4c4b4a49 128"
	offloadAH  = "ip xfrm state add src 192.0.2.2 dst 192.0.2.1 proto ah spi 0x3003 mode tunnel auth-trunc 'hmac(sha256)' 0x0011223344556677889900112233445566778899aabbccddeeff001122334455 128"
)

// xdpConfig reads the receive-offload config the live XDP program obeys,
// waiting (bounded) until want says it is right: the engine applies a
// parameters change from its own goroutine.
func xdpConfig(t *testing.T, p *testutil.VethPair, pin string, want func(loader.Config) bool) loader.Config {
	t.Helper()
	var c loader.Config
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := p.A.Do(func() error {
			d, err := loader.Open(p.IfA, loader.Options{PinRoot: pin})
			if err != nil {
				return err
			}
			defer d.Close()
			c, err = d.Config()
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if want(c) || time.Now().After(deadline) {
			return c
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type paramsDoc struct {
	Parameters struct {
		IPsecV2 struct {
			Value int `json:"value"`
		} `json:"IPsecV2"`
		Algorithms map[string]string `json:"Algorithms"`
	} `json:"parameters"`
}

// TestRunOffloadFromConfig: `offload` lines are the parameters a daemon
// starts with, before any SA: an AH SA under `offload IPsecV2=esp` stops
// the start naming IPsecV2, a DES SA is admitted because `offload
// cbc(des)=on` came first; caps shows the parameters and the current view,
// the live XDP program passes AH to the kernel, sa add refuses AH. A reload
// without the IPsecV2 line turns AH back on, undoes a runtime caps set the
// file lacks, and publishes one parameters-set change naming the config; a
// reload that changes nothing publishes none.
func TestRunOffloadFromConfig(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	pin := xdpsectest.MountBPFFS(t)

	// An SA the parameters forbid: the start fails with one line.
	bad := xdpsectest.LaunchDaemon(t, p.A, hostConfig(t, p, pin, []string{"offload IPsecV2=esp"}, []string{offloadESP, offloadAH}), xdpsectest.Options{})
	if !bad.Wait(20 * time.Second) {
		t.Fatalf("daemon with an AH SA under IPsecV2=esp still runs:\n%s", bad.Log())
	}
	if bad.ExitErr() == nil {
		t.Fatalf("daemon with an AH SA under IPsecV2=esp exited 0:\n%s", bad.Log())
	}
	var last string
	for _, l := range strings.Split(strings.TrimSpace(bad.Stderr()), "\n") {
		if strings.HasPrefix(l, "xdpsec run: ") {
			last = l
		}
	}
	for _, w := range []string{bad.Config().Path, "ah spi 0x00003003", "parameter IPsecV2", "`offload` line"} {
		if !strings.Contains(last, w) {
			t.Errorf("start refusal %q does not say %q", last, w)
		}
	}
	if strings.Contains(bad.Log(), "00112233445566") {
		t.Errorf("refusal shows key bytes:\n%s", bad.Log())
	}
	if out := p.A.MustRun(t, "ip", "link", "show", p.IfA); strings.Contains(out, "prog/xdp") {
		t.Fatalf("a refused start left XDP attached:\n%s", out)
	}

	conf := hostConfig(t, p, pin, []string{"offload IPsecV2=esp", "offload cbc(des)=on  # the DES SA needs it"}, []string{offloadESP, offloadDES, offloadOut})
	d := xdpsectest.StartDaemon(t, p.A, conf, xdpsectest.Options{})
	// The SAs are admitted at start, so the TUN MTU leaves room for the
	// outbound SA's overhead (AES-GCM tunnel over IPv4: at most 57 bytes),
	// not the 128 bytes kept when no outbound SA is known.
	if out := p.A.MustRun(t, "ip", "-o", "link", "show", "xdpsec0"); !strings.Contains(out, " mtu 1443 ") {
		t.Errorf("TUN MTU with offload lines and an AES-GCM tunnel SA is not 1500-57:\n%s", out)
	}
	var cur watchLine
	if err := json.Unmarshal([]byte(d.MustCLI("caps", "--view", "current", "-j")), &cur); err != nil {
		t.Fatal(err)
	}
	if cur.Current.V2.Ah || !cur.Current.V2.Esp {
		t.Fatalf("caps --view current with IPsecV2=esp: %+v", cur.Current.V2)
	}
	var par paramsDoc
	if err := json.Unmarshal([]byte(d.MustCLI("caps", "--view", "parameters", "-j")), &par); err != nil {
		t.Fatal(err)
	}
	if par.Parameters.IPsecV2.Value != 3 || par.Parameters.Algorithms["cbc(des)"] != "on" || par.Parameters.Algorithms["hmac(md5)"] != "off" {
		t.Fatalf("caps --view parameters: %+v", par.Parameters)
	}
	if c := xdpConfig(t, p, pin, func(c loader.Config) bool { return !c.AH }); c.AH || !c.ESP {
		t.Fatalf("XDP config with IPsecV2=esp: %+v", c)
	}
	if list := d.MustCLI("sa", "list"); !strings.Contains(list, "spi 0x00003002") || !strings.Contains(list, "spi 0x00003001") {
		t.Fatalf("the config's ESP and DES SAs are not installed:\n%s", list)
	}
	out, errOut, ok := cliRun(d, pipeOf(t, offloadAH+"\n"), "sa", "add", "-")
	if ok || !strings.Contains(errOut, "stdin:1: ") || !strings.Contains(errOut, "parameter IPsecV2") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("sa add of an AH SA under IPsecV2=esp: ok %v stdout %q stderr %q", ok, out, errOut)
	}

	// A runtime set the file does not repeat, then a reload without the
	// IPsecV2 line.
	d.MustCLI("caps", "set", "hmac(md5)=on")
	seq := func() uint64 {
		c, err := control.Dial(conf.Socket)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ch, err := capabilities.ControlGet(c)
		if err != nil {
			t.Fatal(err)
		}
		return ch.Seq
	}
	before := seq()
	watch := d.Command("caps", "--watch", "-j", "--count", "2", "--view", "current")
	pr, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		watch.Process.Kill()
		watch.Wait()
	}()
	lr := newLineReader(pr)
	if first := decodeWatch(t, lr.next(t)); first.Seq != before {
		t.Fatalf("watch starts at %d %s, want the latest change %d", first.Seq, first.Reason, before)
	}
	body, err := os.ReadFile(conf.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf.Path, []byte(strings.Replace(string(body), "offload IPsecV2=esp\n", "", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	reloaded := func(n int) {
		t.Helper()
		d.Signal(syscall.SIGHUP)
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(d.Stderr(), "reloaded "+conf.Path) < n {
			if time.Now().After(deadline) {
				t.Fatalf("no reload %d in the log 10 s after SIGHUP:\n%s", n, d.Log())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	reloaded(1)
	ch := decodeWatch(t, lr.next(t))
	if ch.Seq != before+1 || ch.Reason != "parameters-set" || ch.Detail != "config "+conf.Path || !ch.Current.V2.Ah || !ch.Current.V2.Esp {
		t.Fatalf("change after reload: %+v, want %d parameters-set by the config with AH and ESP", ch, before+1)
	}
	if err := json.Unmarshal([]byte(d.MustCLI("caps", "--view", "parameters", "-j")), &par); err != nil {
		t.Fatal(err)
	}
	if par.Parameters.IPsecV2.Value != 4 || par.Parameters.Algorithms["cbc(des)"] != "on" || par.Parameters.Algorithms["hmac(md5)"] != "off" {
		t.Fatalf("parameters after reload (want IPsecV2 4, DES on from the file, the runtime MD5 undone): %+v", par.Parameters)
	}
	if c := xdpConfig(t, p, pin, func(c loader.Config) bool { return c.AH }); !c.AH || !c.ESP {
		t.Fatalf("XDP config after the reload: %+v", c)
	}
	if !strings.Contains(d.Stderr(), "changed=\"IPsecV2=ah-esp hmac(md5)=off\"") {
		t.Errorf("the log does not say what the reload changed:\n%s", d.Stderr())
	}
	// The AH SA is admitted now.
	if out, errOut, ok := cliRun(d, pipeOf(t, offloadAH+"\n"), "sa", "add", "-"); !ok {
		t.Fatalf("sa add of an AH SA after the reload: %s%s", out, errOut)
	}
	// A reload that changes no parameter publishes nothing. (It drops the
	// AH SA, which the file lacks.)
	reloaded(2)
	if got := seq(); got != before+1 {
		t.Fatalf("a reload without parameter changes moved the change sequence %d -> %d", before+1, got)
	}
	// A reload that switches off the algorithm of an installed SA keeps
	// the SA and says so in the log.
	body, err = os.ReadFile(conf.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf.Path, append(body, "offload rfc4106(gcm(aes))=off\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	reloaded(3)
	if got := seq(); got != before+2 {
		t.Errorf("change sequence after the third reload %d, want %d", got, before+2)
	}
	var warned string
	for _, l := range strings.Split(d.Stderr(), "\n") {
		if strings.Contains(l, "installed SA outside the offload parameters") {
			warned += l + "\n"
		}
	}
	if !strings.Contains(warned, "esp spi 0x00003001") || !strings.Contains(warned, "rfc4106(gcm(aes))") || strings.Contains(warned, "0x00003002") {
		t.Errorf("warnings after switching GCM off name %q, want the GCM SA 0x3001 only", warned)
	}
	if list := d.MustCLI("sa", "list"); !strings.Contains(list, "spi 0x00003001") {
		t.Errorf("the GCM SA was removed by the reload:\n%s", list)
	}

	// `xdpsec reload`: a config that does not load is its one line here
	// and changes nothing; a good one answers with what changed.
	good := append([]byte(nil), body...)
	if err := os.WriteFile(conf.Path, append(body, "offload IPsecV2=maybe\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, ok = cliRun(d, nil, "reload")
	if ok || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, conf.Path+":") || !strings.Contains(errOut, "IPsecV2") {
		t.Fatalf("reload of a bad config: ok %v stdout %q stderr %q", ok, out, errOut)
	}
	if got := seq(); got != before+2 {
		t.Errorf("a failed reload moved the change sequence to %d", got)
	}
	if err := os.WriteFile(conf.Path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	var res reloadResult
	if err := json.Unmarshal([]byte(d.MustCLI("reload", "-j")), &res); err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.OffloadChanged, " ") != "rfc4106(gcm(aes))=on" || res.SAsUnchanged != 3 || res.SAsAdded+res.SAsDeleted+res.SAsUpdated != 0 {
		t.Errorf("reload -j: %+v, want GCM back on and the 3 SAs unchanged", res)
	}
	if out := d.MustCLI("reload"); !strings.HasPrefix(out, "reloaded: SAs 0 added, 0 updated, 0 deleted, 3 unchanged;") || strings.Contains(out, "offload") {
		t.Errorf("reload with nothing to change: %q", out)
	}
}

// TestRunExitsWhenLinkDeleted: a daemon whose link is deleted (its XDP
// program and AF_XDP sockets go with it) exits non-zero with one line
// naming the link, removing its TUN, instead of running on without
// carrying the traffic.
func TestRunExitsWhenLinkDeleted(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	d := xdpsectest.StartDaemon(t, p.A, hostConfig(t, p, "", nil, []string{offloadESP}), xdpsectest.Options{})
	p.A.MustRun(t, "ip", "link", "del", p.IfA)
	if !d.Wait(20 * time.Second) {
		t.Fatalf("daemon still runs 20 s after its link was deleted:\n%s", d.Log())
	}
	if d.ExitErr() == nil {
		t.Fatalf("daemon exited 0 after its link was deleted:\n%s", d.Log())
	}
	var last string
	for _, l := range strings.Split(strings.TrimSpace(d.Stderr()), "\n") {
		if strings.HasPrefix(l, "xdpsec run: ") {
			last = l
		}
	}
	if !strings.Contains(last, p.IfA) || !strings.Contains(last, "restart") {
		t.Errorf("exit line %q does not name %s and say to restart", last, p.IfA)
	}
	if out := p.A.MustRun(t, "ip", "-o", "link", "show"); strings.Contains(out, "xdpsec0") {
		t.Errorf("the TUN outlived the daemon:\n%s", out)
	}
}
