package loader

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/xdpsec/xdpsec/internal/testutil"
)

// Attach and Detach may run at the same time in several processes (a
// daemon starting while an operator attaches) or goroutines: concurrent
// Attaches on one link must all succeed with one program and intact pins,
// and concurrent Detaches must remove it exactly once. Before the pin root
// was locked, 4 concurrent Attaches all failed (each loser removed the
// winner's pins) and nothing stayed attached.
func TestConcurrentAttachDetach(t *testing.T) {
	p := testutil.NewVethPair(t)
	opts := quietOptions(testPinRoot(t))
	detachAtEnd(t, p.A, p.IfA, opts)
	key := SAKey{SPI: 0x7447, Dst: p.IPv4A, Proto: ProtoESP}
	const n = 4
	run := func(fn func(i int) error) []error {
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = p.A.Do(func() error { return fn(i) })
			}()
		}
		wg.Wait()
		return errs
	}
	ids := make([]uint32, n)
	errs := run(func(i int) error {
		d, err := Attach(p.IfA, ModeNative, opts)
		if err != nil {
			return err
		}
		defer d.Close()
		if err := d.PutSA(SAKey{SPI: key.SPI + uint32(i), Dst: key.Dst, Proto: ProtoESP}, SA{ID: uint32(i + 1)}); err != nil {
			return err
		}
		info, err := d.prog.Info()
		if err != nil {
			return err
		}
		id, _ := info.ID()
		ids[i] = uint32(id)
		return nil
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Attach %d: %v", i, err)
		}
	}
	attached := xdpOn(t, p.A, p.IfA)
	for i, id := range ids {
		if errs[i] == nil && id != attached {
			t.Errorf("Attach %d handed out program %d, the link runs %d", i, id, attached)
		}
	}
	err := p.A.Do(func() error {
		d, err := Open(p.IfA, opts)
		if err != nil {
			return fmt.Errorf("Open after concurrent Attaches: %w", err)
		}
		defer d.Close()
		sas, err := d.SAs()
		if err != nil {
			return err
		}
		if len(sas) != n {
			return fmt.Errorf("%d SAs in the pinned map, want %d (one per Attach)", len(sas), n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	errs = run(func(int) error { return Detach(p.IfA, opts) })
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrNotAttached):
			t.Errorf("concurrent Detach %d: %v, want nil or ErrNotAttached", i, err)
		}
	}
	if ok != 1 {
		t.Errorf("%d Detaches succeeded, want exactly 1", ok)
	}
	if id := xdpOn(t, p.A, p.IfA); id != 0 {
		t.Errorf("program %d still attached", id)
	}
}

// Two network namespaces with an interface of the same name (and, in fresh
// namespaces, often the same ifindex) sharing one pin root: the second
// Attach must neither take the first one's live attachment for its own
// (nothing would run on its link) nor remove its pins as stale (the first
// would lose its program when its process exits); it must refuse, saying
// why and what to do.
func TestAttachRefusesAnotherNamespacesPins(t *testing.T) {
	p1, p2 := testutil.NewVethPair(t), testutil.NewVethPair(t)
	if p1.IfA != p2.IfA {
		t.Skipf("setup: the pairs' interfaces are named %s and %s", p1.IfA, p2.IfA)
	}
	opts := quietOptions(testPinRoot(t))
	detachAtEnd(t, p1.A, p1.IfA, opts)
	detachAtEnd(t, p2.A, p2.IfA, opts)
	if err := p1.A.Do(func() error {
		d, err := Attach(p1.IfA, ModeNative, opts)
		if err == nil {
			d.Close()
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	first := xdpOn(t, p1.A, p1.IfA)
	for _, viaNetlink := range []bool{false, true} {
		o := opts
		o.Netlink = viaNetlink
		err := p2.A.Do(func() error {
			d, err := Attach(p2.IfA, ModeNative, o)
			if err == nil {
				d.Close()
			}
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "another network namespace") || !strings.Contains(err.Error(), "--pin-root") {
			t.Errorf("netlink=%v: Attach in a second namespace over the first one's pins = %v, want a refusal naming the cause", viaNetlink, err)
		}
		if id := xdpOn(t, p2.A, p2.IfA); id != 0 {
			t.Errorf("netlink=%v: program %d attached in the second namespace", viaNetlink, id)
		}
		if id := xdpOn(t, p1.A, p1.IfA); id != first {
			t.Errorf("netlink=%v: the first namespace runs %d, was %d", viaNetlink, id, first)
		}
	}
	if err := p1.A.Do(func() error {
		d, err := Open(p1.IfA, opts)
		if err == nil {
			d.Close()
		}
		return err
	}); err != nil {
		t.Errorf("the first namespace's pins are gone: %v", err)
	}
	if err := p1.A.Do(func() error { return Detach(p1.IfA, opts) }); err != nil {
		t.Fatal(err)
	}
}
