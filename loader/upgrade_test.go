package loader

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdpsec/xdpsec/bpf"
	"github.com/xdpsec/xdpsec/internal/testutil"
)

// An upgrade whose build counts more reasons than the attached one (the
// third session added pass-otherhost: 13 -> 14) restarts over pins whose
// reason-counter map is too small. Attach must not fail with "run detach
// first" (a detach drops the SAs and, on a host without kernel ESP, the
// traffic): it replaces that one map, keeps the SAs and config, swaps the
// program, and the new program counts into the new map. Any other map of
// another layout still fails.
func TestAttachOverAnEarlierBuildsCounters(t *testing.T) {
	testutil.RequireRoot(t)
	p := testutil.NewVethPair(t)
	opts := quietOptions(testPinRoot(t))
	var logged strings.Builder
	opts.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	detachAtEnd(t, p.A, p.IfA, opts)
	key := SAKey{SPI: 0x7337, Dst: p.IPv4A, Proto: ProtoESP}

	// "The earlier build": another program attached through xdpsec's
	// bpf_link, and a pinned counter map one reason short.
	other := anotherBuildsProgram(t)
	var dir string
	err := p.A.Do(func() error {
		d, err := Attach(p.IfA, ModeNative, opts)
		if err != nil {
			return err
		}
		defer d.Close()
		dir = d.dir
		if err := d.PutSA(key, SA{ID: 73}); err != nil {
			return err
		}
		if err := d.lnk.Update(other); err != nil {
			return err
		}
		small, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: uint32(NumReasons - 1)})
		if err != nil {
			return err
		}
		defer small.Close()
		// That build had no link-address map either.
		if err := os.Remove(filepath.Join(dir, bpf.MapLinkAddr)); err != nil {
			return err
		}
		pin := filepath.Join(dir, bpf.MapCounters)
		if err := os.Remove(pin); err != nil {
			return err
		}
		return small.Pin(pin)
	})
	if err != nil {
		t.Fatal(err)
	}

	err = p.A.Do(func() error {
		d, err := Attach(p.IfA, ModeAuto, opts)
		if err != nil {
			t.Errorf("Attach over an earlier build's smaller counter map: %v", err)
			return nil
		}
		defer d.Close()
		if a, err := d.LinkAddr(); err != nil || len(a) != 6 {
			t.Errorf("link address after the upgrade: %v %v, want the link's MAC", a, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logged.String(), "reason counters restarted from 0") || !strings.Contains(logged.String(), "replaced the attached xdpsec program") {
		t.Errorf("the counter reset and the swap were not both logged: %q", logged.String())
	}
	pinned, err := ebpf.LoadPinnedMap(filepath.Join(dir, bpf.MapCounters), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := pinned.MaxEntries(); n != uint32(NumReasons) {
		t.Errorf("pinned counter map has %d entries, want %d", n, NumReasons)
	}
	pinned.Close()

	// The SA was kept, and the swapped-in program counts into the new map.
	d, err := openIn(t, p.A, p.IfA, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if sa, _, err := d.LookupSA(key); err != nil || sa.ID != 73 {
		t.Errorf("pinned SA after the upgrade: %+v %v", sa, err)
	}
	sendIP(t, p.B, 50, p.IPv4A, esp(0x7337, 32))
	if got := waitCounters(t, d.Maps, map[Reason]uint64{ReasonSteerFallback: 1}); got[ReasonSteerFallback] != 1 {
		t.Errorf("steer-fallback = %d after one ESP packet, want 1 (a fresh map, used by the new program)", got[ReasonSteerFallback])
	}

	// Any other map of another layout is still refused with the advice.
	err = p.A.Do(func() error {
		d, err := Open(p.IfA, opts)
		if err != nil {
			return err
		}
		defer d.Close()
		if err := d.lnk.Update(other); err != nil {
			return err
		}
		small, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: uint32(d.config.ValueSize()) + 4, MaxEntries: 1})
		if err != nil {
			return err
		}
		defer small.Close()
		pin := filepath.Join(dir, bpf.MapConfig)
		if err := os.Remove(pin); err != nil {
			return err
		}
		return small.Pin(pin)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = p.A.Do(func() error {
		d, err := Attach(p.IfA, ModeAuto, opts)
		if err == nil {
			d.Close()
		}
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "run detach first") {
		t.Errorf("Attach over a config map of another layout: %v, want the advice to run detach first", err)
	}
}
