package dropcap

import (
	"github.com/xdpsec/xdpsec/internal/pcap"
)

// PcapSink writes captured packets to w, a pcap writer created for
// pcap.LinkTypeEthernet. The caller closes w after Run returns.
func PcapSink(w *pcap.Writer) Sink { return pcapSink{w} }

type pcapSink struct{ w *pcap.Writer }

func (s pcapSink) WritePacket(p Packet) error { return WritePacket(s.w, p) }
func (s pcapSink) Flush() error               { return s.w.Flush() }

// WritePacket appends p to w. A control-socket client uses it for the
// Packet events it receives.
func WritePacket(w *pcap.Writer, p Packet) error {
	return w.WritePacketLen(p.Time, p.Data, max(p.OrigLen, len(p.Data)))
}

// SinkFunc adapts a function to a Sink without buffering (Flush does
// nothing), e.g. a control-socket stream's send.
type SinkFunc func(Packet) error

// WritePacket calls f.
func (f SinkFunc) WritePacket(p Packet) error { return f(p) }

// Flush does nothing.
func (SinkFunc) Flush() error { return nil }
