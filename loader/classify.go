package loader

import (
	"fmt"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/xdpsec/xdpsec/bpf"
)

// Result is the datapath's decision for one frame.
type Result struct {
	Verdict Verdict
	Reason  Reason
	// LookedUp is true when the packet was IPsec with a parseable SA key
	// and the SA map was consulted; Key then holds that key (its SPI is
	// known even on a miss).
	LookedUp bool
	// Matched is true when the SA lookup hit; SAID then names the SA.
	// A hit can still pass (state-mismatch, disabled-class).
	Matched bool
	Key     SAKey
	SAID    uint32
}

func (r Result) String() string {
	s := fmt.Sprintf("%s %s", r.Verdict, ReasonName(r.Reason))
	if r.Matched {
		s += fmt.Sprintf(" sa %d (%s)", r.SAID, r.Key)
	}
	return s
}

// Classifier runs the XDP program on single frames through
// BPF_PROG_TEST_RUN. It loads its own, never attached copy of the program
// and maps, so it needs CAP_BPF but no link. Program it with the embedded
// Maps methods (PutSA, SetConfig); it starts with DefaultConfig.
//
// The copy is built with xdpsec_record_last = 1, which makes the program
// also write the reason and the matched SA into xdpsec_lastpkt; the attached
// datapath is built with 0 and the verifier prunes that code. Classify
// takes the reason from the counter the run bumped (and checks it against
// the record) and the SA from the record.
//
// No AF_XDP socket is bound, so a packet the datapath would steer reports
// VerdictSteer with reason steer-fallback. A Classifier is safe for
// concurrent use; runs are serialised.
type Classifier struct {
	*Maps
	mu   sync.Mutex
	coll *ebpf.Collection
	prog *ebpf.Program
	last *ebpf.Map
}

// NewClassifier loads the classify copy of the program.
func NewClassifier() (*Classifier, error) {
	coll, err := loadCollection(loadParams{recordLast: true, queues: 1, maxSAs: DefaultMaxSAs})
	if err != nil {
		return nil, err
	}
	maps, err := mapsFrom(coll.Maps)
	if err != nil {
		coll.Close()
		return nil, err
	}
	c := &Classifier{Maps: maps, coll: coll, prog: coll.Programs[bpf.ProgClassify], last: coll.Maps[bpf.MapLastPacket]}
	if err := c.SetConfig(DefaultConfig()); err != nil {
		coll.Close()
		return nil, err
	}
	return c, nil
}

// Close releases the program and maps.
func (c *Classifier) Close() error {
	c.coll.Close()
	return nil
}

// Program returns the loaded (unattached) program, for benchmarks.
func (c *Classifier) Program() *ebpf.Program { return c.prog }

// Classify runs the program once on frame (an Ethernet frame) and reports
// what it decided. BPF_PROG_TEST_RUN refuses frames shorter than an
// Ethernet header, which the program would pass as pass-unparsed; Classify
// answers that for them without running the program.
func (c *Classifier) Classify(frame []byte) (Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()

	if len(frame) < 14 {
		return Result{Verdict: VerdictPass, Reason: ReasonPassUnparsed}, nil
	}
	before, err := c.Counters()
	if err != nil {
		return Result{}, err
	}
	ret, err := c.prog.Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		return Result{}, fmt.Errorf("run xdpsec program on a %d-byte frame: %w", len(frame), err)
	}
	after, err := c.Counters()
	if err != nil {
		return Result{}, err
	}
	var last bpf.Last
	if err := c.last.Lookup(uint32(0), &last); err != nil {
		return Result{}, fmt.Errorf("read classify record: %w", err)
	}

	res := Result{Reason: Reason(NumReasons)}
	for r := range NumReasons {
		switch d := after[r] - before[r]; {
		case d == 1 && res.Reason == Reason(NumReasons):
			res.Reason = Reason(r)
		case d != 0:
			return Result{}, fmt.Errorf("classify: counter %s moved by %d in one run", ReasonName(Reason(r)), d)
		}
	}
	if res.Reason == Reason(NumReasons) {
		return Result{}, fmt.Errorf("classify: no reason counter moved (program returned %d)", ret)
	}
	if Reason(last.Reason) != res.Reason {
		return Result{}, fmt.Errorf("classify: counted %s but recorded %s", ReasonName(res.Reason), ReasonName(Reason(last.Reason)))
	}
	res.Verdict = VerdictOf(res.Reason)
	if want := xdpAction(res.Verdict, res.Reason); ret != want {
		return Result{}, fmt.Errorf("classify: reason %s but XDP action %d", ReasonName(res.Reason), ret)
	}
	if last.LookedUp != 0 {
		res.LookedUp = true
		res.Key = unmarshalKey(last.Key)
	}
	if last.Matched != 0 {
		res.Matched = true
		res.SAID = last.SaId
	}
	return res, nil
}

// XDP actions (enum xdp_action).
const (
	xdpDrop     = 1
	xdpPass     = 2
	xdpRedirect = 4
)

func xdpAction(v Verdict, r Reason) uint32 {
	switch {
	case v == VerdictDrop:
		return xdpDrop
	case r == ReasonSteered:
		return xdpRedirect
	}
	return xdpPass
}
