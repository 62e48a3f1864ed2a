package loader

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/cilium/ebpf"

	"github.com/xdpsec/xdpsec/bpf"
)

// Maps programs and reads the datapath's maps. It is embedded in Datapath
// and Classifier. Methods are safe for concurrent use to the extent the
// kernel's map operations are; PutSA on an existing SA reads and rewrites
// its per-CPU counters, so increments racing with it may be lost.
type Maps struct {
	sas      *ebpf.Map // PERCPU_HASH xdpsec_sa_key -> xdpsec_sa
	xsks     *ebpf.Map // XSKMAP rx queue -> AF_XDP socket
	config   *ebpf.Map // ARRAY[1] xdpsec_config
	counters *ebpf.Map // PERCPU_ARRAY[reason] u64
	// linkAddr is ARRAY[1] xdpsec_lladdr; nil only when opened from the
	// pins of an older build that had no such map.
	linkAddr *ebpf.Map
}

// mapsFrom takes the maps out of m. The link-address map is optional (see
// Maps.linkAddr); the others are not.
func mapsFrom(m map[string]*ebpf.Map) (*Maps, error) {
	out := &Maps{sas: m[bpf.MapSAs], xsks: m[bpf.MapXSKs], config: m[bpf.MapConfig], counters: m[bpf.MapCounters], linkAddr: m[bpf.MapLinkAddr]}
	if out.sas == nil || out.xsks == nil || out.config == nil || out.counters == nil {
		return nil, fmt.Errorf("xdpsec object lacks one of its maps")
	}
	return out, nil
}

// SACapacity returns the number of SAs the SA map holds (its max_entries
// as the kernel reports it; a pinned map reused from an earlier run keeps
// its own size). It needs no privilege beyond holding the map.
func (m *Maps) SACapacity() uint32 { return m.sas.MaxEntries() }

func (m *Maps) close() {
	for _, x := range []*ebpf.Map{m.sas, m.xsks, m.config, m.counters, m.linkAddr} {
		if x != nil {
			x.Close()
		}
	}
}

// PutSA adds the SA, or updates it in place keeping its counters. Updating
// is safe while attached: the kernel rewrites an existing per-CPU element in
// place, so a packet never misses the SA during the write. Putting an
// unchanged SA writes nothing; changing one may lose the increments the
// program makes between PutSA's read and write (microseconds).
func (m *Maps) PutSA(k SAKey, sa SA) error {
	key, err := k.marshal()
	if err != nil {
		return err
	}
	if err := sa.validate(k); err != nil {
		return err
	}
	var cur []bpf.SA
	if err := m.sas.Lookup(&key, &cur); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("look up SA %s: %w", k, err)
	}
	// Unchanged: write nothing. A per-CPU value can only be written whole,
	// so a write carries the counters read above back, and whatever the
	// program counted in between is lost; a reload re-putting every SA
	// must not cost that.
	if len(cur) > 0 && cur[0].SaId == sa.ID && cur[0].EncapDport == sa.EncapPort {
		return nil
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("count CPUs: %w", err)
	}
	vals := make([]bpf.SA, ncpu)
	for i := range vals {
		vals[i] = bpf.SA{SaId: sa.ID, EncapDport: sa.EncapPort}
		if i < len(cur) {
			vals[i].Packets, vals[i].Bytes = cur[i].Packets, cur[i].Bytes
		}
	}
	if err := m.sas.Put(&key, vals); err != nil {
		return fmt.Errorf("write SA %s: %w", k, mapErr(err))
	}
	return nil
}

// DeleteSA removes the SA; ErrSANotFound if there is none.
func (m *Maps) DeleteSA(k SAKey) error {
	key, err := k.marshal()
	if err != nil {
		return err
	}
	if err := m.sas.Delete(&key); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete %s: %w", k, ErrSANotFound)
		}
		return fmt.Errorf("delete SA %s: %w", k, mapErr(err))
	}
	return nil
}

// LookupSA returns the SA and its counters; ErrSANotFound if there is none.
func (m *Maps) LookupSA(k SAKey) (SA, SACounters, error) {
	key, err := k.marshal()
	if err != nil {
		return SA{}, SACounters{}, err
	}
	var vals []bpf.SA
	if err := m.sas.Lookup(&key, &vals); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return SA{}, SACounters{}, fmt.Errorf("%s: %w", k, ErrSANotFound)
		}
		return SA{}, SACounters{}, fmt.Errorf("look up SA %s: %w", k, mapErr(err))
	}
	sa, c := sumSA(vals)
	return sa, c, nil
}

func sumSA(vals []bpf.SA) (SA, SACounters) {
	var sa SA
	var c SACounters
	for i, v := range vals {
		if i == 0 {
			sa = SA{ID: v.SaId, EncapPort: v.EncapDport}
		}
		c.Packets += v.Packets
		c.Bytes += v.Bytes
	}
	return sa, c
}

// SAs lists every SA with its counters, in map order.
func (m *Maps) SAs() ([]SAEntry, error) {
	var (
		out  []SAEntry
		key  bpf.SAKey
		vals []bpf.SA
	)
	it := m.sas.Iterate()
	for it.Next(&key, &vals) {
		sa, c := sumSA(vals)
		out = append(out, SAEntry{Key: unmarshalKey(key), SA: sa, Counters: c})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list SAs: %w", mapErr(err))
	}
	return out, nil
}

// SetXSK binds rx queue to the AF_XDP socket fd (bound to the same link and
// queue): packets the program steers on that queue go to it.
func (m *Maps) SetXSK(queue uint32, fd int) error {
	if queue >= m.xsks.MaxEntries() {
		return fmt.Errorf("set XSK for queue %d: the XSK map has %d slots", queue, m.xsks.MaxEntries())
	}
	if err := m.xsks.Put(queue, uint32(fd)); err != nil {
		return fmt.Errorf("set XSK for queue %d: %w", queue, mapErr(err))
	}
	return nil
}

// ClearXSK unbinds rx queue; its IPsec packets fall back to the kernel.
// Clearing an empty slot is not an error.
func (m *Maps) ClearXSK(queue uint32) error {
	if err := m.xsks.Delete(queue); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("clear XSK for queue %d: %w", queue, mapErr(err))
	}
	return nil
}

// Config returns the receive-offload configuration in force.
func (m *Maps) Config() (Config, error) {
	var c bpf.Config
	if err := m.config.Lookup(uint32(0), &c); err != nil {
		return Config{}, fmt.Errorf("read config: %w", mapErr(err))
	}
	return unmarshalConfig(c), nil
}

// SetConfig replaces the receive-offload configuration; packets see it at
// once.
func (m *Maps) SetConfig(c Config) error {
	raw, err := c.marshal()
	if err != nil {
		return err
	}
	if err := m.config.Put(uint32(0), raw); err != nil {
		return fmt.Errorf("write config: %w", mapErr(err))
	}
	return nil
}

// errNoLinkAddrMap: the maps came from the pins of a build without the
// link-address check.
var errNoLinkAddrMap = fmt.Errorf("the attached xdpsec program predates the link-address check (no %s pinned): detach and attach again", bpf.MapLinkAddr)

// SetLinkAddr tells the program the link's MAC address: IPsec in a unicast
// frame to any other address then passes to the kernel (which drops it as
// PACKET_OTHERHOST) and counts pass-otherhost instead of being steered.
// Frames to a group address (broadcast, multicast) are never affected. A
// nil or all-zero addr turns the check off (a link without an Ethernet
// address: tun, ipip). Anything but 0 or 6 bytes, or a group address, is
// ErrInvalidConfig. Packets see the new address at once. Attach writes the
// link's address; whoever follows the link's changes (the engine) calls
// this again when it changes.
func (m *Maps) SetLinkAddr(addr net.HardwareAddr) error {
	var v bpf.LinkAddr
	switch {
	case len(addr) == 0:
	case len(addr) != len(v.Addr):
		return fmt.Errorf("%w: link address %s: want a 6-byte Ethernet address", ErrInvalidConfig, addr)
	case addr[0]&1 != 0:
		return fmt.Errorf("%w: link address %s is a group (multicast) address, which no link has", ErrInvalidConfig, addr)
	default:
		copy(v.Addr[:], addr)
	}
	if m.linkAddr == nil {
		return fmt.Errorf("set link address: %w", errNoLinkAddrMap)
	}
	if err := m.linkAddr.Put(uint32(0), &v); err != nil {
		return fmt.Errorf("write link address: %w", mapErr(err))
	}
	return nil
}

// LinkAddr returns the address SetLinkAddr (or Attach) wrote, nil when the
// check is off.
func (m *Maps) LinkAddr() (net.HardwareAddr, error) {
	if m.linkAddr == nil {
		return nil, fmt.Errorf("read link address: %w", errNoLinkAddrMap)
	}
	var v bpf.LinkAddr
	if err := m.linkAddr.Lookup(uint32(0), &v); err != nil {
		return nil, fmt.Errorf("read link address: %w", mapErr(err))
	}
	if v.Addr == [6]uint8{} {
		return nil, nil
	}
	return net.HardwareAddr(v.Addr[:]), nil
}

// Counters returns the reason counters summed over CPUs.
func (m *Maps) Counters() (Counters, error) {
	var out Counters
	var per []uint64
	for r := range NumReasons {
		if err := m.counters.Lookup(uint32(r), &per); err != nil {
			return out, fmt.Errorf("read counter %s: %w", ReasonName(Reason(r)), mapErr(err))
		}
		for _, v := range per {
			out[r] += v
		}
	}
	return out, nil
}

// mapErr turns the permission errno into the sentinel a CLI can report.
func mapErr(err error) error {
	if errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w: %w", ErrPermission, err)
	}
	return err
}
