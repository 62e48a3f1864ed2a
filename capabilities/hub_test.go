package capabilities

import (
	"errors"
	"testing"
)

func TestHubEvents(t *testing.T) {
	st := State{Hardware: fullHardware(), Parameters: DefaultParameters(), Linux: Linux{EngineRunning: true,
		Link: &LinkInfo{Name: "xe0", MTU: 1500, Up: true, RxQueues: 2}}}
	hub := NewHub(st)
	sub := hub.Subscribe(16)
	defer sub.Close()
	c := <-sub.C
	if c.Seq != 1 || c.Reason != ReasonProbe || !c.State.Current().Equal(st.Current()) {
		t.Fatalf("first change: %d %s", c.Seq, c.Reason)
	}

	// Parameters: AH off reaches the XDP config; a bad update publishes nothing.
	if _, err := hub.SetParameters(Parameters{IPsecV2: NDIS_OFFLOAD_PARAMETERS_IPSECV2_ESP_ENABLED}); err != nil {
		t.Fatal(err)
	}
	c = <-sub.C
	if c.Seq != 2 || c.Reason != ReasonParametersSet || c.State.Current().XDPConfig().AH {
		t.Fatalf("parameters change: %d %s AH=%v", c.Seq, c.Reason, c.State.Current().XDPConfig().AH)
	}
	if _, err := hub.SetParameters(Parameters{IPsecV2: 9}); !errors.Is(err, ErrBadParameter) {
		t.Fatalf("bad update: %v", err)
	}
	// A set that changes nothing is still indicated (NDIS rule).
	if _, err := hub.SetParameters(Parameters{}); err != nil {
		t.Fatal(err)
	}
	if c = <-sub.C; c.Seq != 3 || c.Reason != ReasonParametersSet {
		t.Fatalf("no-op set: %d %s", c.Seq, c.Reason)
	}

	// Link: one event per difference, none for an identical update.
	if got := hub.LinkChanged(LinkInfo{Name: "xe0", MTU: 9000, Up: false, RxQueues: 4}); len(got) != 3 {
		t.Fatalf("link change gave %d events", len(got))
	}
	for i, r := range []Reason{ReasonLinkDown, ReasonMTUChange, ReasonQueueChange} {
		if c = <-sub.C; c.Reason != r || c.Seq != uint64(4+i) {
			t.Fatalf("event %d: %d %s, want %s", i, c.Seq, c.Reason, r)
		}
	}
	if got := hub.LinkChanged(LinkInfo{Name: "xe0", MTU: 9000, Up: false, RxQueues: 4}); len(got) != 0 {
		t.Fatalf("identical link update gave %d events", len(got))
	}
	if got := hub.LinkChanged(LinkInfo{Name: "other", MTU: 1}); len(got) != 0 {
		t.Fatal("another link's update produced events")
	}

	// Self-test failure removes the algorithm from both views.
	hub.SelfTestFailed("rfc4106(gcm(aes))", errors.New("vector 3: tag mismatch"))
	c = <-sub.C
	if c.Reason != ReasonSelfTestFailure || c.State.Hardware.HasAlgorithm("rfc4106(gcm(aes))") || c.State.Current().HasAlgorithm("rfc4106(gcm(aes))") {
		t.Fatalf("self-test failure: %s %v", c.Reason, c.State.Current().Algorithms)
	}
	if st.Hardware.HasAlgorithm("rfc4106(gcm(aes))") != true {
		t.Fatal("hub changed the caller's state")
	}

	// XDP fallback, then engine stop: everything off.
	hub.XDPModeChanged(XDPGeneric, "native attach failed")
	if c = <-sub.C; c.Reason != ReasonXDPFallback || c.State.Linux.XDPMode != XDPGeneric {
		t.Fatalf("fallback: %s %s", c.Reason, c.State.Linux.XDPMode)
	}
	hub.EngineStopped("SIGTERM")
	c = <-sub.C
	if c.Reason != ReasonEngineStop || c.State.Current().Active() || c.State.Current().XDPConfig() != (XDPConfig{}) ||
		c.State.Current().V2() != (IPsecOffloadV2{}) || c.State.Current().V1() != (IPsecOffloadV1{}) {
		t.Fatalf("engine stop left something on: %+v", c.State.Current())
	}
	if c.Seq != hub.Last().Seq || hub.Last().Reason != ReasonEngineStop {
		t.Fatalf("Last = %d %s", hub.Last().Seq, hub.Last().Reason)
	}
}

func TestHubSlowSubscriberKeepsNewest(t *testing.T) {
	hub := NewHub(State{Parameters: DefaultParameters()})
	sub := hub.Subscribe(2)
	for range 10 {
		if _, err := hub.SetParameters(Parameters{}); err != nil {
			t.Fatal(err)
		}
	}
	a, b := <-sub.C, <-sub.C
	if a.Seq != 10 || b.Seq != 11 || sub.Missed() != 9 {
		t.Fatalf("kept %d,%d missed %d; want 10,11 missed 9", a.Seq, b.Seq, sub.Missed())
	}
	sub.Close()
	sub.Close()
	if _, ok := <-sub.C; ok {
		t.Fatal("C open after Close")
	}
	if _, err := hub.SetParameters(Parameters{}); err != nil { // no send on a closed channel
		t.Fatal(err)
	}
}

// TestHubFollowsTheAttachedXDPMode: once the state names the mode of
// xdpsec's program, a link update whose attached mode differs is an
// xdp-fallback (detached: receive offload off); before that, a program
// appearing on the link is not taken for xdpsec's.
func TestHubFollowsTheAttachedXDPMode(t *testing.T) {
	link := LinkInfo{Name: "xe0", MTU: 1500, Up: true, RxQueues: 1}
	st := State{Hardware: fullHardware(), Parameters: DefaultParameters(), Linux: Linux{EngineRunning: true, Link: &link}}

	unknown := NewHub(st)
	seen := link
	seen.AttachedXDP = XDPNative
	if got := unknown.LinkChanged(seen); len(got) != 0 {
		t.Fatalf("a program on a link the state attached nothing to gave %d events", len(got))
	}

	st.Linux.XDPMode = XDPNative
	hub := NewHub(st)
	if got := hub.LinkChanged(seen); len(got) != 0 {
		t.Fatalf("the mode the state names gave %d events", len(got))
	}
	steps := []struct {
		attached XDPMode
		detail   string
		receive  bool
	}{
		{XDPNone, "xe0: XDP native -> detached", false},
		{XDPGeneric, "xe0: XDP detached -> generic", false}, // back, but not probed
	}
	for _, s := range steps {
		li := link
		li.AttachedXDP = s.attached
		got := hub.LinkChanged(li)
		if len(got) != 1 || got[0].Reason != ReasonXDPFallback || got[0].Detail != s.detail ||
			got[0].State.Linux.XDPMode != s.attached || got[0].State.Hardware.Receive != s.receive {
			t.Fatalf("attached %q: %+v, want one xdp-fallback %q with receive %v", s.attached, got, s.detail, s.receive)
		}
		if again := hub.LinkChanged(li); len(again) != 0 {
			t.Fatalf("the same update again gave %d events", len(again))
		}
	}
	// A new probe of the re-attached datapath switches receive on again.
	st.Linux.XDPMode = XDPGeneric
	if _, ok := hub.SetState(st); !ok || !hub.State().Hardware.Receive {
		t.Fatalf("SetState after re-attach: published %v, receive %v", ok, hub.State().Hardware.Receive)
	}
}

// TestHubResetParameters: a reset lands on the defaults plus the update,
// whatever was set before (what a config reload does to a runtime caps
// set), and publishes parameters-set with its detail; a bad update
// publishes nothing.
func TestHubResetParameters(t *testing.T) {
	hub := NewHub(State{Hardware: fullHardware(), Parameters: DefaultParameters()})
	sub := hub.Subscribe(16)
	defer sub.Close()
	<-sub.C
	// A runtime set: AH off, DES on.
	if _, err := hub.SetParameters(Parameters{IPsecV2: NDIS_OFFLOAD_PARAMETERS_IPSECV2_ESP_ENABLED, Algorithms: map[string]Switch{"cbc(des)": SwitchOn}}); err != nil {
		t.Fatal(err)
	}
	<-sub.C
	u, err := ParseSettings([]string{"UdpEsp=off"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := hub.ResetParameters(u, "config /etc/xdpsec.conf")
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultParameters()
	want.UdpEsp = SwitchOff
	if !c.State.Parameters.Equal(want) || !hub.State().Parameters.Equal(want) {
		t.Fatalf("after reset: %+v, want defaults with UdpEsp off", c.State.Parameters)
	}
	if got := <-sub.C; got.Seq != 3 || got.Reason != ReasonParametersSet || got.Detail != "config /etc/xdpsec.conf" {
		t.Fatalf("change %d %s %q", got.Seq, got.Reason, got.Detail)
	}
	if !c.State.Current().V2().Ah {
		t.Errorf("reset did not undo the runtime IPsecV2=esp: %+v", c.State.Current())
	}
	if _, err := hub.ResetParameters(Parameters{IPsecV2: 9}, "bad"); !errors.Is(err, ErrBadParameter) {
		t.Fatalf("bad reset: %v", err)
	}
	select {
	case got := <-sub.C:
		t.Fatalf("a bad reset published %d %s", got.Seq, got.Reason)
	default:
	}
	if ch := ParameterChanges(want, DefaultParameters()); len(ch) != 1 || ch[0] != "UdpEsp=on" {
		t.Errorf("ParameterChanges back to the defaults: %q", ch)
	}
}
