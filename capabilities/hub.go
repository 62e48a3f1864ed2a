package capabilities

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// Reason says why the configuration changed.
type Reason uint8

// Reasons of a Change. The strings are part of the watch output and the
// control socket stream; they never change once released.
const (
	// ReasonProbe: the first state, from Probe.
	ReasonProbe Reason = iota + 1
	// ReasonParametersSet: the operator set parameters (sent after every
	// set, changed or not, as NDIS requires after OID_TCP_OFFLOAD_PARAMETERS).
	ReasonParametersSet
	// ReasonLinkDown, ReasonLinkUp: the link's administrative state changed.
	ReasonLinkDown
	ReasonLinkUp
	// ReasonMTUChange: the link's MTU changed.
	ReasonMTUChange
	// ReasonQueueChange: the link's receive queue count changed.
	ReasonQueueChange
	// ReasonXDPFallback: the datapath's XDP attach mode changed (native to
	// generic, or detached).
	ReasonXDPFallback
	// ReasonEngineStop: the engine stopped; everything is off and traffic
	// falls back to the kernel (fail-open).
	ReasonEngineStop
	// ReasonSelfTestFailure: an algorithm failed its known-answer test and
	// was removed.
	ReasonSelfTestFailure
	// ReasonHardwareChange: a new probe changed the hardware view.
	ReasonHardwareChange
)

var reasonNames = map[Reason]string{
	ReasonProbe:           "probe",
	ReasonParametersSet:   "parameters-set",
	ReasonLinkDown:        "link-down",
	ReasonLinkUp:          "link-up",
	ReasonMTUChange:       "mtu-change",
	ReasonQueueChange:     "queue-change",
	ReasonXDPFallback:     "xdp-fallback",
	ReasonEngineStop:      "engine-stop",
	ReasonSelfTestFailure: "self-test-failure",
	ReasonHardwareChange:  "hardware-change",
}

func (r Reason) String() string {
	if s, ok := reasonNames[r]; ok {
		return s
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// MarshalText writes the reason's name.
func (r Reason) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// Change is one NDIS_STATUS_TASK_OFFLOAD_CURRENT_CONFIG equivalent: the
// whole new state (State.Current() is the current configuration), a
// sequence number that grows by one per change of this hub, and why.
type Change struct {
	Seq    uint64
	Reason Reason
	Detail string
	State  State
}

// Hub holds the state and publishes every change to its subscribers. All
// methods are safe for concurrent use; publishing never blocks on a slow
// subscriber (see Subscribe).
type Hub struct {
	mu    sync.Mutex
	seq   uint64
	state State
	subs  map[*Subscription]struct{}
	// reason and detail of the latest change
	reason Reason
	detail string
	// followXDP: the state has named the mode xdpsec's program is attached
	// in, so LinkChanged reports the attached mode moving away from it.
	followXDP bool
}

// NewHub returns a hub whose first change (sequence 1, ReasonProbe) is
// initial.
func NewHub(initial State) *Hub {
	return &Hub{seq: 1, state: initial.Clone(), subs: map[*Subscription]struct{}{}, reason: ReasonProbe,
		followXDP: initial.Linux.XDPMode != XDPNone}
}

// Last returns the latest change (deep copy).
func (h *Hub) Last() Change {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.changeLocked(h.reason, h.detail)
}

// State returns the latest state (deep copy).
func (h *Hub) State() State {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state.Clone()
}

func (h *Hub) changeLocked(r Reason, detail string) Change {
	return Change{Seq: h.seq, Reason: r, Detail: detail, State: h.state.Clone()}
}

// Subscription receives changes on C. If the subscriber falls more than
// depth changes behind, the oldest undelivered change is dropped (each
// Change carries the whole state, so the newest is enough) and Missed
// counts it; the gap shows in the sequence numbers.
type Subscription struct {
	// C delivers changes in sequence order; it is closed by Close.
	C      <-chan Change
	c      chan Change
	hub    *Hub
	missed atomic.Uint64
}

// Subscribe returns a subscription with room for depth undelivered changes
// (at least 1). The latest change is delivered first, so a subscriber
// always starts from a known state.
func (h *Hub) Subscribe(depth int) *Subscription {
	depth = max(depth, 1)
	c := make(chan Change, depth)
	s := &Subscription{C: c, c: c, hub: h}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[s] = struct{}{}
	s.c <- h.changeLocked(h.reason, h.detail)
	return s
}

// Missed returns how many changes were dropped for this subscriber.
func (s *Subscription) Missed() uint64 { return s.missed.Load() }

// Close ends the subscription and closes C. It is idempotent.
func (s *Subscription) Close() {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s]; ok {
		delete(h.subs, s)
		close(s.c)
	}
}

// publishLocked numbers and delivers one change.
func (h *Hub) publishLocked(r Reason, detail string) Change {
	h.seq++
	h.reason, h.detail = r, detail
	ch := h.changeLocked(r, detail)
	for s := range h.subs {
		for {
			select {
			case s.c <- ch:
			default:
				select {
				case <-s.c:
					s.missed.Add(1)
				default:
				}
				continue
			}
			break
		}
	}
	return ch
}

// SetParameters applies the update u (NO_CHANGE members keep their value)
// and publishes ReasonParametersSet, even when nothing changed, as NDIS
// requires after every OID_TCP_OFFLOAD_PARAMETERS set. A bad update is an
// error wrapping ErrBadParameter and publishes nothing.
func (h *Hub) SetParameters(u Parameters) (Change, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, err := h.state.Parameters.Update(u)
	if err != nil {
		return Change{}, err
	}
	h.state.Parameters = p
	return h.publishLocked(ReasonParametersSet, ""), nil
}

// ResetParameters sets the parameters to DefaultParameters with the update
// u applied — what a daemon started with these settings has, whatever was
// set before — and publishes ReasonParametersSet with detail (say, which
// config file). The daemon calls it for its config's `offload` lines at
// start and on every reload. A bad update is an error wrapping
// ErrBadParameter and publishes nothing.
func (h *Hub) ResetParameters(u Parameters, detail string) (Change, error) {
	p, err := DefaultParameters().Update(u)
	if err != nil {
		return Change{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.state.Parameters = p
	return h.publishLocked(ReasonParametersSet, detail), nil
}

// EngineStopped turns everything off (the hardware view offloads nothing,
// so the XDP program passes all traffic to the kernel) and publishes
// ReasonEngineStop with detail.
func (h *Hub) EngineStopped(detail string) Change {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.state.Hardware = Offload{Algorithms: h.state.Hardware.Algorithms}
	h.state.Linux.EngineRunning = false
	h.state.Linux.AFXDPMode = AFXDPNone
	h.state.Linux.Queues = 0
	if !slices.Contains(h.state.Linux.Limits, "engine not running") {
		h.state.Linux.Limits = append(h.state.Linux.Limits, "engine not running")
	}
	return h.publishLocked(ReasonEngineStop, detail)
}

// SelfTestFailed removes the algorithm from the hardware view, records err
// as its self-test result and publishes ReasonSelfTestFailure.
func (h *Hub) SelfTestFailed(name string, err error) Change {
	h.mu.Lock()
	defer h.mu.Unlock()
	hw := &h.state.Hardware
	hw.Algorithms = slices.DeleteFunc(slices.Clone(hw.Algorithms), func(n string) bool { return n == name })
	if h.state.Linux.SelfTest == nil {
		h.state.Linux.SelfTest = map[string]string{}
	}
	msg := "failed"
	if err != nil {
		msg = err.Error()
	}
	h.state.Linux.SelfTest[name] = msg
	return h.publishLocked(ReasonSelfTestFailure, name+": "+msg)
}

// XDPModeChanged records the datapath's new XDP attach mode and publishes
// ReasonXDPFallback. XDPNone means the program is gone: nothing is
// received, so receive offload is switched off in the hardware view.
func (h *Hub) XDPModeChanged(mode XDPMode, detail string) Change {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.xdpModeChangedLocked(mode, detail)
}

func (h *Hub) xdpModeChangedLocked(mode XDPMode, detail string) Change {
	h.followXDP = true
	h.state.Linux.XDPMode = mode
	if mode == XDPNone {
		h.state.Hardware.Receive = false
	}
	return h.publishLocked(ReasonXDPFallback, detail)
}

// modeText names an XDP mode in event details ("detached" for none).
func modeText(m XDPMode) string {
	if m == XDPNone {
		return "detached"
	}
	return string(m)
}

// SetState replaces hardware view and Linux facts (keeping parameters), as
// after a new Probe, and publishes ReasonHardwareChange if anything
// differs. It reports whether it published.
func (h *Hub) SetState(st State) (Change, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state.Hardware.Equal(st.Hardware) && h.state.Linux.Equal(st.Linux) {
		return Change{}, false
	}
	h.state.Hardware = st.Hardware.Clone()
	h.state.Linux = st.Linux.Clone()
	h.followXDP = h.followXDP || st.Linux.XDPMode != XDPNone
	return h.publishLocked(ReasonHardwareChange, ""), true
}

// LinkChanged merges a fresh view of the link into the state (the native
// XDP probe result is kept) and publishes one change per difference:
// link-down/link-up, mtu-change, queue-change, and xdp-fallback when the
// mode of the XDP program attached to the link (li.AttachedXDP, from
// IFLA_XDP) is no longer the mode the state says xdpsec's program runs in:
// detached (receive offload off, see XDPModeChanged), or re-attached in
// another mode. That is followed only once the state has named a mode (a
// probe of an attached datapath, XDPModeChanged): before that, a program
// appearing on the link may not be xdpsec's. A program that comes back
// does not switch receive offload on again; a new probe (SetState) does.
// Updates for another link and updates that change nothing publish
// nothing.
func (h *Hub) LinkChanged(li LinkInfo) []Change {
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.state.Linux.Link
	if old == nil || old.Name != li.Name {
		return nil
	}
	var out []Change
	set := func(r Reason, detail string, apply func(l *LinkInfo)) {
		n := *h.state.Linux.Link
		apply(&n)
		h.state.Linux.Link = &n
		out = append(out, h.publishLocked(r, detail))
	}
	if old.Up != li.Up {
		r := ReasonLinkUp
		if !li.Up {
			r = ReasonLinkDown
		}
		set(r, fmt.Sprintf("%s %s", li.Name, r), func(l *LinkInfo) { l.Up, l.OperState = li.Up, li.OperState })
	}
	if cur := h.state.Linux.Link; cur.MTU != li.MTU {
		set(ReasonMTUChange, fmt.Sprintf("%s mtu %d -> %d", li.Name, cur.MTU, li.MTU), func(l *LinkInfo) { l.MTU = li.MTU })
	}
	if cur := h.state.Linux.Link; cur.RxQueues != li.RxQueues && li.RxQueues > 0 {
		set(ReasonQueueChange, fmt.Sprintf("%s rx queues %d -> %d", li.Name, cur.RxQueues, li.RxQueues),
			func(l *LinkInfo) { l.RxQueues, l.QueueSource = li.RxQueues, li.QueueSource })
	}
	if h.followXDP && li.AttachedXDP != h.state.Linux.XDPMode {
		from, to := h.state.Linux.XDPMode, li.AttachedXDP
		detail := fmt.Sprintf("%s: XDP %s -> %s", li.Name, modeText(from), modeText(to))
		out = append(out, h.xdpModeChangedLocked(to, detail))
	}
	// Quiet updates (operstate settling, attached XDP) are stored without
	// an event: they do not change what is offloaded.
	n := *h.state.Linux.Link
	n.OperState, n.AttachedXDP, n.Index = li.OperState, li.AttachedXDP, li.Index
	h.state.Linux.Link = &n
	return out
}
