// Package metrics exports xdpsec's counters to Prometheus.
//
// A Collector reads its sources when Prometheus scrapes, never per packet:
// the datapath keeps counting in its own counters (the XDP program's
// per-CPU maps, the SAD's per-worker shards, the AF_XDP sockets' atomics
// and the kernel's XDP_STATISTICS) and a scrape sums them. Sources are
// small interfaces that the daemon's live objects already satisfy:
//
//	*sad.SAD          SASource     (per-SA packets, bytes, errors by reason)
//	*loader.Datapath  XDPSource    (XDP reason counters, per-SA XDP counters)
//	*afxdp.Socket     SocketSource (XDP_STATISTICS and ring counters)
//	EngineSourceFunc  EngineSource (engine-wide verdicts and counters)
//
// Families (every counter ends in _total):
//
//	xdpsec_sa_packets_total, xdpsec_sa_bytes_total   {spi,dst,proto,dir}
//	xdpsec_sa_errors_total                           {spi,dst,proto,dir,reason}
//	xdpsec_xdp_packets_total                         {link,reason}
//	xdpsec_xdp_sa_packets_total, _bytes_total        {link,spi,dst,proto}
//	xdpsec_afxdp_<stat>_total                        {link,queue}
//	xdpsec_afxdp_ring_pending (gauge)                {link,queue,ring}
//	xdpsec_in_verdicts_total                         {verdict}
//	xdpsec_engine_packets_total                      {counter}
//	xdpsec_xfrm_stat_total                           {counter}
//
// xdpsec_xfrm_stat carries the names of /proc/net/xfrm_stat
// (XfrmInNoStates, XfrmInStateProtoError, XfrmInStateSeqError, ...), each
// counting what the kernel would count there had it processed the packet
// itself: see VerdictXfrmStat, loader.ReasonXfrmStat and
// EngineCounterXfrmStat for the mapping.
//
// Serve publishes a registry on /metrics; it refuses addresses other than
// loopback unless told otherwise (the counters name SPIs and peers).
package metrics

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xdpsec/xdpsec/loader"
	"github.com/xdpsec/xdpsec/userspace/afxdp"
	"github.com/xdpsec/xdpsec/userspace/ipsec"
	"github.com/xdpsec/xdpsec/userspace/sad"
)

// SASource lists the SAs whose counters are exported. *sad.SAD satisfies
// it. List is called once per scrape and must be safe for concurrent use
// with the workers.
type SASource interface {
	List() []*sad.Association
}

// XDPSource reads one link's XDP reason counters, summed over CPUs.
// *loader.Datapath satisfies it. A source that also has
// SAs() ([]loader.SAEntry, error) (as *loader.Datapath does) gets its
// per-SA XDP counters exported too.
type XDPSource interface {
	Counters() (loader.Counters, error)
}

// xdpSAs is the optional part of an XDPSource.
type xdpSAs interface {
	SAs() ([]loader.SAEntry, error)
}

// SocketSource reads one AF_XDP socket's statistics. *afxdp.Socket
// satisfies it; its Stats may be called while the worker runs, not
// concurrently with Close, so remove the socket (RemoveSocket) before
// closing it.
type SocketSource interface {
	Stats() (afxdp.Stats, error)
}

// EngineCounters are the engine's own counters, keyed by their stable
// names: InVerdicts by ipsec.Verdict name ("bad-icv", "replay", ...)
// counting every inbound packet the workers handled, including those no
// SA claimed; Counters by engine.CounterName ("out-no-sa", ...).
type EngineCounters struct {
	InVerdicts map[string]uint64
	Counters   map[string]uint64
}

// EngineSource reads the engine's counters once per scrape.
type EngineSource interface {
	EngineCounters() (EngineCounters, error)
}

// EngineSourceFunc adapts a function to EngineSource, e.g.
//
//	metrics.EngineSourceFunc(func() (metrics.EngineCounters, error) {
//		st, err := eng.Stats()
//		return metrics.EngineCounters{InVerdicts: st.InVerdicts, Counters: st.Counters}, err
//	})
type EngineSourceFunc func() (EngineCounters, error)

// EngineCounters calls f.
func (f EngineSourceFunc) EngineCounters() (EngineCounters, error) { return f() }

// Options are the Collector's fixed sources. Links and sockets come and go
// with AddLink/AddSocket.
type Options struct {
	// SAs lists the SAs (the daemon's *sad.SAD); nil exports none.
	SAs SASource
	// Engine gives the engine-wide counters; nil exports none. When it is
	// set, the inbound part of xdpsec_xfrm_stat comes from its
	// InVerdicts (which include packets no SA claimed); otherwise from the
	// per-SA verdict counters.
	Engine EngineSource
	// Direction returns the dir label ("in" or "out") of an SA. When nil,
	// an SA's `dir` is used, and without one an SA is "in" when its
	// destination is an address of this host, as the engine decides.
	Direction func(*sad.Association) string
}

type linkSource struct {
	name string
	src  XDPSource
}

type socketSource struct {
	link  string
	queue int
	src   SocketSource
}

// Collector is a prometheus.Collector over xdpsec's counters. Register
// it (or use NewRegistry) and scrape; its methods are safe for concurrent
// use.
type Collector struct {
	opts Options

	mu      sync.Mutex
	links   []linkSource
	sockets []socketSource
}

// New returns a Collector reading the sources in opts.
func New(opts Options) *Collector {
	return &Collector{opts: opts}
}

// AddLink exports the XDP counters of the link named name, replacing a
// source already added under that name.
func (c *Collector) AddLink(name string, src XDPSource) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.links = slices.DeleteFunc(c.links, func(l linkSource) bool { return l.name == name })
	c.links = append(c.links, linkSource{name, src})
}

// RemoveLink stops exporting the link's counters.
func (c *Collector) RemoveLink(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.links = slices.DeleteFunc(c.links, func(l linkSource) bool { return l.name == name })
}

// AddSocket exports the statistics of the AF_XDP socket bound to queue of
// link, replacing a source already added for that pair.
func (c *Collector) AddSocket(link string, queue int, src SocketSource) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sockets = slices.DeleteFunc(c.sockets, func(s socketSource) bool { return s.link == link && s.queue == queue })
	c.sockets = append(c.sockets, socketSource{link, queue, src})
}

// RemoveSocket stops exporting the socket's statistics. It returns after
// any scrape that was reading the socket, so the caller may then close it.
func (c *Collector) RemoveSocket(link string, queue int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sockets = slices.DeleteFunc(c.sockets, func(s socketSource) bool { return s.link == link && s.queue == queue })
}

var (
	saLabels  = []string{"spi", "dst", "proto", "dir"}
	sockLabel = []string{"link", "queue"}

	descSAPackets = prometheus.NewDesc("xdpsec_sa_packets_total",
		"Packets an SA protected (out) or verified and accepted (in).", saLabels, nil)
	descSABytes = prometheus.NewDesc("xdpsec_sa_bytes_total",
		"Bytes of the packets counted in xdpsec_sa_packets_total.", saLabels, nil)
	descSAErrors = prometheus.NewDesc("xdpsec_sa_errors_total",
		"Packets of an SA dropped, by reason (the ipsec verdict: bad-icv, replay, ...).",
		append(slices.Clone(saLabels), "reason"), nil)
	descXDP = prometheus.NewDesc("xdpsec_xdp_packets_total",
		"Packets the XDP program decided on, by reason (loader.ReasonName).", []string{"link", "reason"}, nil)
	descXDPSAPackets = prometheus.NewDesc("xdpsec_xdp_sa_packets_total",
		"Packets the XDP program matched to an SA, whatever it decided.", []string{"link", "spi", "dst", "proto"}, nil)
	descXDPSABytes = prometheus.NewDesc("xdpsec_xdp_sa_bytes_total",
		"Bytes (outer IP datagram) of the packets in xdpsec_xdp_sa_packets_total.", []string{"link", "spi", "dst", "proto"}, nil)
	descVerdicts = prometheus.NewDesc("xdpsec_in_verdicts_total",
		"Inbound packets the engine handled, by verdict.", []string{"verdict"}, nil)
	descEngine = prometheus.NewDesc("xdpsec_engine_packets_total",
		"The engine's packet counters, by name (engine.CounterName).", []string{"counter"}, nil)
	descXfrm = prometheus.NewDesc("xdpsec_xfrm_stat_total",
		"What the kernel's /proc/net/xfrm_stat would count for the packets xdpsec handled, by counter name.", []string{"counter"}, nil)
	descRingPending = prometheus.NewDesc("xdpsec_afxdp_ring_pending",
		"Descriptors posted on an AF_XDP ring and not yet consumed.", append(slices.Clone(sockLabel), "ring"), nil)
)

// socketCounter is one counter family of afxdp.Stats.
type socketCounter struct {
	desc *prometheus.Desc
	get  func(*afxdp.Stats) uint64
}

func sockDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("xdpsec_afxdp_"+name+"_total", help, sockLabel, nil)
}

var socketCounters = []socketCounter{
	// The kernel's XDP_STATISTICS.
	{sockDesc("rx_dropped", "Frames the kernel dropped for the socket for reasons other than invalid descriptors (XDP_STATISTICS)."), func(s *afxdp.Stats) uint64 { return s.RxDropped }},
	{sockDesc("rx_invalid_descs", "Invalid fill-ring descriptors (XDP_STATISTICS)."), func(s *afxdp.Stats) uint64 { return s.RxInvalidDescs }},
	{sockDesc("rx_ring_full", "Frames dropped because the rx ring was full (XDP_STATISTICS)."), func(s *afxdp.Stats) uint64 { return s.RxRingFull }},
	{sockDesc("rx_fill_ring_empty_descs", "Times the fill ring was empty when the kernel needed a frame (XDP_STATISTICS)."), func(s *afxdp.Stats) uint64 { return s.RxFillRingEmptyDescs }},
	{sockDesc("tx_ring_empty_descs", "Times the kernel found the tx ring empty (XDP_STATISTICS)."), func(s *afxdp.Stats) uint64 { return s.TxRingEmptyDescs }},
	{sockDesc("tx_invalid_descs", "Invalid tx-ring descriptors (XDP_STATISTICS)."), func(s *afxdp.Stats) uint64 { return s.TxInvalidDescs }},
	// The socket's own ring counters.
	{sockDesc("rx_packets", "Descriptors taken from the rx ring."), func(s *afxdp.Stats) uint64 { return s.RxPackets }},
	{sockDesc("rx_batches", "Non-empty batches taken from the rx ring."), func(s *afxdp.Stats) uint64 { return s.RxBatches }},
	{sockDesc("tx_packets", "Descriptors posted on the tx ring."), func(s *afxdp.Stats) uint64 { return s.TxPackets }},
	{sockDesc("tx_batches", "Non-empty batches posted on the tx ring."), func(s *afxdp.Stats) uint64 { return s.TxBatches }},
	{sockDesc("tx_ring_full", "Transmit calls that could not post every descriptor."), func(s *afxdp.Stats) uint64 { return s.TxRingFull }},
	{sockDesc("completed", "Frames reaped from the completion ring."), func(s *afxdp.Stats) uint64 { return s.Completed }},
	{sockDesc("filled", "Frames posted on the fill ring."), func(s *afxdp.Stats) uint64 { return s.Filled }},
	{sockDesc("rx_kicks", "need_wakeup recvfrom calls for the fill and rx rings."), func(s *afxdp.Stats) uint64 { return s.RxKicks }},
	{sockDesc("tx_kicks", "need_wakeup sendto calls for the tx ring."), func(s *afxdp.Stats) uint64 { return s.TxKicks }},
	{sockDesc("kick_errors", "Wakeup calls that failed with an unexpected errno."), func(s *afxdp.Stats) uint64 { return s.KickErrors }},
	{sockDesc("tx_kick_busy", "Tx kicks the kernel refused as busy (EAGAIN, EBUSY, ENOBUFS, ENETDOWN); the worker retries them."), func(s *afxdp.Stats) uint64 { return s.TxKickBusy }},
}

// saErrorVerdicts are the per-SA reasons always exported (zero included),
// so that a rate() over them exists before the first error. Any other
// non-OK verdict is exported once it is non-zero.
var saErrorVerdicts = []ipsec.Verdict{
	ipsec.VerdictBadICV, ipsec.VerdictBadPadding, ipsec.VerdictBadSeq,
	ipsec.VerdictReplay, ipsec.VerdictMalformed, ipsec.VerdictExpired,
}

// Describe sends every family's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSAPackets, descSABytes, descSAErrors, descXDP, descXDPSAPackets,
		descXDPSABytes, descVerdicts, descEngine, descXfrm, descRingPending} {
		ch <- d
	}
	for _, s := range socketCounters {
		ch <- s.desc
	}
}

// Collect reads every source and sends the current values. A source that
// fails to read is reported as an invalid metric for its family (the
// scrape then names the error) while the others are still sent.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock() // held so RemoveSocket waits for a scrape reading the socket
	var xfrm xfrmStat

	for _, l := range c.links {
		cnt, err := l.src.Counters()
		if err != nil {
			ch <- prometheus.NewInvalidMetric(descXDP, fmt.Errorf("link %s: %w", l.name, err))
			continue
		}
		for r, n := range cnt {
			ch <- prometheus.MustNewConstMetric(descXDP, prometheus.CounterValue, float64(n), l.name, loader.ReasonName(loader.Reason(r)))
		}
		xfrm.addReasons(&cnt)
		if s, ok := l.src.(xdpSAs); ok {
			entries, err := s.SAs()
			if err != nil {
				ch <- prometheus.NewInvalidMetric(descXDPSAPackets, fmt.Errorf("link %s: %w", l.name, err))
				continue
			}
			for _, e := range entries {
				spi, dst, proto := spiLabel(e.Key.SPI), e.Key.Dst.Unmap().String(), e.Key.Proto.String()
				ch <- prometheus.MustNewConstMetric(descXDPSAPackets, prometheus.CounterValue, float64(e.Counters.Packets), l.name, spi, dst, proto)
				ch <- prometheus.MustNewConstMetric(descXDPSABytes, prometheus.CounterValue, float64(e.Counters.Bytes), l.name, spi, dst, proto)
			}
		}
	}

	for _, s := range c.sockets {
		st, err := s.src.Stats()
		if err != nil {
			ch <- prometheus.NewInvalidMetric(socketCounters[0].desc, fmt.Errorf("link %s queue %d: %w", s.link, s.queue, err))
			continue
		}
		q := strconv.Itoa(s.queue)
		for _, sc := range socketCounters {
			ch <- prometheus.MustNewConstMetric(sc.desc, prometheus.CounterValue, float64(sc.get(&st)), s.link, q)
		}
		for _, r := range []struct {
			name string
			n    uint32
		}{{"fill", st.FillPending}, {"completion", st.CompletionPending}, {"rx", st.RxPending}, {"tx", st.TxPending}} {
			ch <- prometheus.MustNewConstMetric(descRingPending, prometheus.GaugeValue, float64(r.n), s.link, q, r.name)
		}
	}

	var saVerdicts [ipsec.NumVerdicts]uint64
	if c.opts.SAs != nil {
		dir := c.opts.Direction
		if dir == nil {
			dir = localDirection()
		}
		for _, a := range c.opts.SAs.List() {
			k, st := a.Key(), a.Stats()
			labels := []string{spiLabel(k.SPI), k.Dst.Unmap().String(), k.Proto.String(), dir(a)}
			ch <- prometheus.MustNewConstMetric(descSAPackets, prometheus.CounterValue, float64(st.Packets), labels...)
			ch <- prometheus.MustNewConstMetric(descSABytes, prometheus.CounterValue, float64(st.Bytes), labels...)
			for v, n := range st.Verdicts {
				saVerdicts[v] += n
				verdict := ipsec.Verdict(v)
				if verdict == ipsec.VerdictOK || verdict == ipsec.VerdictDummy || (n == 0 && !slices.Contains(saErrorVerdicts, verdict)) {
					continue
				}
				ch <- prometheus.MustNewConstMetric(descSAErrors, prometheus.CounterValue, float64(n), append(labels, verdict.String())...)
			}
		}
	}

	inbound := &saVerdicts
	if c.opts.Engine != nil {
		ec, err := c.opts.Engine.EngineCounters()
		if err != nil {
			ch <- prometheus.NewInvalidMetric(descVerdicts, fmt.Errorf("engine: %w", err))
		} else {
			var ev [ipsec.NumVerdicts]uint64
			for name, n := range ec.InVerdicts {
				ch <- prometheus.MustNewConstMetric(descVerdicts, prometheus.CounterValue, float64(n), name)
				if v, ok := ipsec.ParseVerdict(name); ok {
					ev[v] += n
				}
			}
			inbound = &ev
			for name, n := range ec.Counters {
				ch <- prometheus.MustNewConstMetric(descEngine, prometheus.CounterValue, float64(n), name)
				xfrm.add(EngineCounterXfrmStat(name), n)
			}
		}
	}
	xfrm.addVerdicts(inbound)
	for i, n := range xfrm {
		ch <- prometheus.MustNewConstMetric(descXfrm, prometheus.CounterValue, float64(n), XfrmStatNames[i])
	}
}

// spiLabel spells an SPI as `ip xfrm state` does.
func spiLabel(spi uint32) string { return fmt.Sprintf("0x%08x", spi) }

// localDirection returns the default Direction for one scrape: the SA's
// dir, else "in" for a destination that is one of this host's addresses
// (read once, and only if some SA needs it).
func localDirection() func(*sad.Association) string {
	var locals map[netip.Addr]bool
	return func(a *sad.Association) string {
		if d := a.Spec().Dir; d != "" {
			return d
		}
		if locals == nil {
			locals = map[netip.Addr]bool{}
			addrs, _ := net.InterfaceAddrs()
			for _, ad := range addrs {
				if p, err := netip.ParsePrefix(ad.String()); err == nil {
					locals[p.Addr().Unmap()] = true
				}
			}
		}
		if locals[a.Key().Dst.Unmap()] {
			return "in"
		}
		return "out"
	}
}
