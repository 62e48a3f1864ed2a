package capabilities

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdpsec/xdpsec/internal/control"
)

func TestParseSettings(t *testing.T) {
	u, err := ParseSettings([]string{"IPsecV2=esp", "ipsecv1=disabled", "IPsecV2IPv4=NDIS_OFFLOAD_PARAMETERS_IPSECV2_AH_ENABLED",
		"UdpEsp=off", "cbc(des)=on", "rfc7539esp(chacha20,poly1305)=off", "hmac(sha1)=no-change"})
	if err != nil {
		t.Fatal(err)
	}
	want := Parameters{IPsecV1: 1, IPsecV2: 3, IPsecV2IPv4: 2, UdpEsp: SwitchOff,
		Algorithms: map[string]Switch{"cbc(des)": SwitchOn, "rfc7539esp(chacha20,poly1305)": SwitchOff, "hmac(sha1)": SwitchNoChange}}
	if !u.Equal(want) {
		t.Fatalf("got %+v\nwant %+v", u, want)
	}
	p, err := DefaultParameters().Update(u)
	if err != nil {
		t.Fatal(err)
	}
	if p.Algorithms["hmac(sha1)"] != SwitchOn || p.Algorithms["cbc(des)"] != SwitchOn {
		t.Fatalf("update: %+v", p.Algorithms)
	}
	// The registry keywords: numbers count from 0 (disabled) as the
	// registry does, one less than the OID; words are the same.
	u, err = ParseSettings([]string{"*IPsecOffloadV2=2", "*ipsecoffloadv1ipv4=0", "*IPsecOffloadV2IPv4=ah-esp"})
	if err != nil {
		t.Fatal(err)
	}
	if want := (Parameters{IPsecV1: NDIS_OFFLOAD_PARAMETERS_IPSECV1_DISABLED, IPsecV2: NDIS_OFFLOAD_PARAMETERS_IPSECV2_ESP_ENABLED,
		IPsecV2IPv4: NDIS_OFFLOAD_PARAMETERS_IPSECV2_AH_AND_ESP_ENABLED}); !u.Equal(want) {
		t.Fatalf("registry keywords: got %+v\nwant %+v", u, want)
	}
	if u, err = ParseSettings([]string{"*IPsecOffloadV2=3"}); err != nil || u.IPsecV2 != NDIS_OFFLOAD_PARAMETERS_IPSECV2_AH_AND_ESP_ENABLED {
		t.Fatalf("*IPsecOffloadV2=3 (the registry default): %+v, %v", u, err)
	}
	if _, err := ParseSettings([]string{"*IPsecOffloadV2=4"}); !errors.Is(err, ErrBadParameter) || !strings.Contains(err.Error(), "the OID's minus one") {
		t.Errorf("*IPsecOffloadV2=4: %v, want the registry range explained", err)
	}
	for _, bad := range [][]string{nil, {"IPsecV2"}, {"IPsecV2="}, {"IPsecV3=esp"}, {"IPsecV2=maybe"}, {"UdpEsp=ah"}, {"cbc(aes)=yes please"}, {"gcm(aes)=on"},
		{"*IPsecOffloadV2=-1"}, {"*IPsecOffloadV3=1"}, {"*IPsecOffloadV2=maybe"}} {
		_, err := ParseSettings(bad)
		if !errors.Is(err, ErrBadParameter) {
			t.Errorf("%q: %v, want ErrBadParameter", bad, err)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error is not one line: %q", bad, err)
		}
	}
}

func TestReasonTextRoundTrip(t *testing.T) {
	for r := range reasonNames {
		b, _ := r.MarshalText()
		var got Reason
		if err := got.UnmarshalText(b); err != nil || got != r {
			t.Errorf("%v: got %v, %v", r, got, err)
		}
	}
	var r Reason
	if err := r.UnmarshalText([]byte("coffee")); err == nil {
		t.Error("unknown reason accepted")
	}
}

// sampleState is a state with every kind of member set, as a daemon sends.
func sampleState() State {
	return State{
		Hardware:   fullHardware(),
		Parameters: allOn(),
		Linux: Linux{
			Link:          &LinkInfo{Name: "eth0", Index: 3, MTU: 1500, Up: true, OperState: "up", RxQueues: 4, QueueSource: "sysfs", NativeXDP: Check{Detail: "not tried"}},
			Program:       &Program{Mode: XDPGeneric, Encapsulation: 6, IPv4: true, IPv6: true, ESP: true, AH: true, UdpEsp: 3},
			XDPMode:       XDPGeneric,
			AFXDPMode:     AFXDPCopy,
			Queues:        4,
			EngineRunning: true,
			SelfTest:      map[string]string{"cbc(aes)": "", "cbc(des)": "mismatch"},
			Limits:        []string{},
		},
	}
}

func TestChangeMessageCarriesTheWholeState(t *testing.T) {
	st := sampleState()
	b, err := json.Marshal(MessageOf(Change{Seq: 7, Reason: ReasonMTUChange, Detail: "eth0 mtu 1500 -> 1400", State: st}))
	if err != nil {
		t.Fatal(err)
	}
	var w changeWire
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	c := w.change()
	if c.Seq != 7 || c.Reason != ReasonMTUChange || c.Detail != "eth0 mtu 1500 -> 1400" {
		t.Fatalf("header: %+v", c)
	}
	if !c.State.Hardware.Equal(st.Hardware) || !c.State.Parameters.Equal(st.Parameters) || !c.State.Linux.Equal(st.Linux) {
		t.Fatalf("state changed on the wire:\n got %+v\nwant %+v", c.State, st)
	}
	// The document is the shape, for non-Go clients.
	var doc struct {
		Reason   string                     `json:"reason"`
		Document map[string]json.RawMessage `json:"document"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Reason != "mtu-change" || doc.Document["hardware"] == nil || doc.Document["parameters"] == nil || doc.Document["current"] == nil {
		t.Fatalf("message: reason %q, document keys %v", doc.Reason, doc.Document)
	}
}

func TestControlOps(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the control socket accepts only uid 0")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "control.sock")
	srv, err := control.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	hub := NewHub(sampleState())
	ServeControl(srv, hub)
	go srv.Serve()
	defer srv.Close()
	c, err := control.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	events := make(chan Change, 16)
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- ControlWatch(ctx, c, func(ch Change) error { events <- ch; return nil })
	}()
	next := func() Change {
		t.Helper()
		select {
		case ch := <-events:
			return ch
		case <-ctx.Done():
			t.Fatal("no event")
		}
		return Change{}
	}
	if ch := next(); ch.Seq != 1 || ch.Reason != ReasonProbe {
		t.Fatalf("first event %d %v, want 1 probe", ch.Seq, ch.Reason)
	}

	got, err := ControlGet(c)
	if err != nil || got.Seq != 1 || !got.State.Linux.Equal(hub.State().Linux) {
		t.Fatalf("caps.get: %+v, %v", got.Seq, err)
	}
	set, err := ControlSet(c, []string{"IPsecV2=esp", "cbc(des)=off"})
	if err != nil {
		t.Fatal(err)
	}
	if set.Reason != ReasonParametersSet || set.State.Current().AH || set.Seq != 2 {
		t.Fatalf("caps.set: seq %d reason %v AH %v", set.Seq, set.Reason, set.State.Current().AH)
	}
	if ch := next(); ch.Seq != 2 || ch.Reason != ReasonParametersSet {
		t.Fatalf("watch after set: %d %v", ch.Seq, ch.Reason)
	}
	// A bad setting is one clear line and changes nothing.
	_, err = ControlSet(c, []string{"IPsecV2=sometimes"})
	var re *control.RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Msg, "IPsecV2") || strings.Contains(re.Msg, "\n") {
		t.Fatalf("bad set: %v", err)
	}
	if hub.Last().Seq != 2 {
		t.Fatal("a refused set published a change")
	}
	hub.EngineStopped("engine exited")
	if ch := next(); ch.Reason != ReasonEngineStop || ch.State.Current().Active() {
		t.Fatalf("engine stop: %v active=%v", ch.Reason, ch.State.Current().Active())
	}
	// Engine stop is a daemon's last change: the stream ends with it.
	if err := <-watchDone; err != nil {
		t.Fatalf("watch ended with %v after engine stop, want a clean end", err)
	}
}
