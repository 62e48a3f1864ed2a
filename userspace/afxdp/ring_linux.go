package afxdp

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Desc describes one packet in the UMEM: Addr is the UMEM offset of its first
// byte, Len its length. Options must be zero on transmit (no multi-buffer).
// The layout is the kernel's struct xdp_desc, so descriptors are copied
// between the rings and the application's vectors without conversion.
type Desc struct {
	Addr    uint64
	Len     uint32
	Options uint32
}

// The kernel's struct xdp_desc and Desc must agree byte for byte.
var _ = [1]struct{}{}[unsafe.Sizeof(Desc{})-unsafe.Sizeof(unix.XDPDesc{})]

// ring is one single-producer single-consumer ring shared with the kernel.
// The application is the producer of the fill and tx rings and the consumer
// of the rx and completion rings; the methods used on a ring depend on which.
// See the package documentation for the memory-order argument.
type ring[T any] struct {
	producer *uint32
	consumer *uint32
	flags    *uint32
	descs    []T
	mask     uint32
	size     uint32

	// cachedProd and cachedCons are this side's view. On a ring we produce,
	// cachedProd is the truth (only we write the producer word) and
	// cachedCons is the last consumer value we loaded plus size, so
	// cachedCons-cachedProd is the number of free slots we know of. On a ring
	// we consume, cachedCons is the truth and cachedProd the last producer
	// value we loaded.
	cachedProd uint32
	cachedCons uint32

	mem []byte // the mmap'd region, unmapped by Close
}

// initRing points r at a ring laid out in mem as off describes.
func initRing[T any](r *ring[T], mem []byte, off unix.XDPRingOffset, size uint32, produce bool) {
	r.mem = mem
	r.producer = (*uint32)(unsafe.Pointer(&mem[off.Producer]))
	r.consumer = (*uint32)(unsafe.Pointer(&mem[off.Consumer]))
	r.flags = (*uint32)(unsafe.Pointer(&mem[off.Flags]))
	r.descs = unsafe.Slice((*T)(unsafe.Pointer(&mem[off.Desc])), size)
	r.size = size
	r.mask = size - 1
	r.cachedProd = atomic.LoadUint32(r.producer)
	r.cachedCons = atomic.LoadUint32(r.consumer)
	if produce {
		r.cachedCons += size
	}
}

// prodFree returns how many slots the producer may fill, trying to reach
// want: the consumer word is reloaded (acquire) only when the cached view
// has fewer than want free slots.
func (r *ring[T]) prodFree(want uint32) uint32 {
	free := r.cachedCons - r.cachedProd
	if free >= want {
		return free
	}
	r.cachedCons = atomic.LoadUint32(r.consumer) + r.size
	return r.cachedCons - r.cachedProd
}

// prodSlot returns the i-th slot after the producer index, to be written
// before prodSubmit publishes it.
func (r *ring[T]) prodSlot(i uint32) *T {
	return &r.descs[(r.cachedProd+i)&r.mask]
}

// prodSubmit publishes n written slots with a release store of the
// producer word: the kernel sees the descriptors no later than the index.
func (r *ring[T]) prodSubmit(n uint32) {
	r.cachedProd += n
	atomic.StoreUint32(r.producer, r.cachedProd)
}

// consAvail returns how many entries (at most want) the consumer may read;
// the producer word is reloaded (acquire) only when the cached view has
// fewer than want.
func (r *ring[T]) consAvail(want uint32) uint32 {
	avail := r.cachedProd - r.cachedCons
	if avail < want {
		r.cachedProd = atomic.LoadUint32(r.producer)
		avail = r.cachedProd - r.cachedCons
	}
	return min(avail, want)
}

// consSlot returns the i-th entry after the consumer index.
func (r *ring[T]) consSlot(i uint32) *T {
	return &r.descs[(r.cachedCons+i)&r.mask]
}

// consRelease gives n read slots back with a release store of the consumer
// word: our reads of them happen before the kernel may overwrite them.
func (r *ring[T]) consRelease(n uint32) {
	r.cachedCons += n
	atomic.StoreUint32(r.consumer, r.cachedCons)
}

// needWakeup reports whether the kernel asked for a syscall to look at
// this ring again.
func (r *ring[T]) needWakeup() bool {
	return atomic.LoadUint32(r.flags)&unix.XDP_RING_NEED_WAKEUP != 0
}

// pending returns producer minus consumer as both words read now: the
// entries posted and not yet consumed. Safe from any goroutine.
func (r *ring[T]) pending() uint32 {
	if r.producer == nil {
		return 0
	}
	return atomic.LoadUint32(r.producer) - atomic.LoadUint32(r.consumer)
}
