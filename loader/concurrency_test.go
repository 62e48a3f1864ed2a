package loader

import (
	"runtime"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdpsec/xdpsec/bpf"
	"github.com/xdpsec/xdpsec/internal/testutil"
)

// runOnEveryCPU runs prog on frame repeat times on each CPU at once (each
// goroutine bound to one CPU) and returns once all are done. done is
// closed when they are.
func runOnEveryCPU(t *testing.T, prog *ebpf.Program, frame []byte, repeat uint32, cpus int) (done chan struct{}, wait func()) {
	t.Helper()
	var wg sync.WaitGroup
	done = make(chan struct{})
	errs := make(chan error, cpus)
	for cpu := range cpus {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // never unlocked: the pinned thread dies with the goroutine
			var set unix.CPUSet
			set.Set(cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				errs <- err
				return
			}
			ret, err := prog.Run(&ebpf.RunOptions{Data: frame, Repeat: repeat})
			if err == nil && ret != 2 { // XDP_PASS: steer-fallback, no socket
				t.Errorf("CPU %d: XDP action %d, want XDP_PASS", cpu, ret)
			}
			errs <- err
		}()
	}
	go func() { wg.Wait(); close(done) }()
	return done, func() {
		<-done
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

// The reason counters and the SA's packet and byte counters are per-CPU
// values bumped without atomics: run the program on every CPU at once and
// check each CPU's share and the sums exactly, while PutSA re-puts the
// same SA (a reload) all along, which must not lose a count. Then change
// the SA while packets run: a packet must never miss it (no-state).
func TestCountersConcurrentCPUsAndSAUpdates(t *testing.T) {
	testutil.RequireRoot(t)
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	cpus = min(cpus, runtime.NumCPU())
	if cpus < 2 {
		t.Skip("needs 2 CPUs")
	}
	coll, err := loadCollection(loadParams{maxSAs: 64, queues: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	m, err := mapsFrom(coll.Maps)
	if err != nil {
		t.Fatal(err)
	}
	for k, sa := range testSAs {
		if err := m.PutSA(k, sa); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.SetConfig(testConfig()); err != nil {
		t.Fatal(err)
	}
	prog := coll.Programs[bpf.ProgClassify]
	frame := v4{dst: dst4, proto: 50, payload: esp(0x1001, 64)}.frame()
	key, _ := saByID(1)
	const repeat = 100000
	total := uint64(repeat * cpus)

	perCPU := func(r Reason) []uint64 {
		var v []uint64
		if err := m.counters.Lookup(uint32(r), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	before := perCPU(ReasonSteerFallback)
	_, saBefore, _ := m.LookupSA(key)
	counters0, _ := m.Counters()

	done, wait := runOnEveryCPU(t, prog, frame, repeat, cpus)
	puts := 0
	for running := true; running && puts < 1_000_000; puts++ {
		select {
		case <-done:
			running = false
		default:
			if err := m.PutSA(key, SA{ID: 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	wait()
	after := perCPU(ReasonSteerFallback)
	for cpu := range cpus {
		if d := after[cpu] - before[cpu]; d != repeat {
			t.Errorf("CPU %d counted %d steer-fallback, ran %d", cpu, d, repeat)
		}
	}
	_, saAfter, _ := m.LookupSA(key)
	if d := saAfter.Packets - saBefore.Packets; d != total {
		t.Errorf("SA counted %d packets, %d ran (%d unchanged PutSA during the runs)", d, total, puts)
	}
	if d := saAfter.Bytes - saBefore.Bytes; d != total*ipLength(frame) {
		t.Errorf("SA counted %d bytes, want %d", d, total*ipLength(frame))
	}
	counters1, _ := m.Counters()
	for r := range NumReasons {
		if Reason(r) != ReasonSteerFallback && counters1[r] != counters0[r] {
			t.Errorf("%s moved by %d", ReasonName(Reason(r)), counters1[r]-counters0[r])
		}
	}

	// Changing the SA (its id) while packets run: the element is rewritten
	// in place, so every packet still finds it.
	done, wait = runOnEveryCPU(t, prog, frame, repeat, cpus)
	for i, running := 0, true; running && i < 1_000_000; i++ {
		select {
		case <-done:
			running = false
		default:
			if err := m.PutSA(key, SA{ID: uint32(1 + 10*(i%2))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	wait()
	counters2, _ := m.Counters()
	if d := counters2[ReasonSteerFallback] - counters1[ReasonSteerFallback]; d != total {
		t.Errorf("while the SA changed: %d of %d packets found it", d, total)
	}
	if d := counters2[ReasonNoState] - counters1[ReasonNoState]; d != 0 {
		t.Errorf("while the SA changed: %d packets missed it (no-state)", d)
	}
}
