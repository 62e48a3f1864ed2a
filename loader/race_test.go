package loader

import (
	"errors"
	"fmt"
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
