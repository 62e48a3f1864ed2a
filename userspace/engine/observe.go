package engine

import (
	"github.com/xdpsec/xdpsec/loader"
	"github.com/xdpsec/xdpsec/userspace/afxdp"
)

// LinkDatapath is one attached link and its loaded XDP datapath.
type LinkDatapath struct {
	Name     string
	Datapath *loader.Datapath
}

// QueueSocket is the AF_XDP socket bound to one receive queue of a link.
type QueueSocket struct {
	Link   string
	Queue  int
	Socket *afxdp.Socket
}

// LinkDatapaths returns the links the engine attached to, in config order,
// for an observer (metrics) to read their counters. The datapaths are
// valid until Stop; an observer must stop reading them before it calls
// Stop.
func (e *Engine) LinkDatapaths() []LinkDatapath {
	out := make([]LinkDatapath, 0, len(e.links))
	for _, el := range e.links {
		out = append(out, LinkDatapath{Name: el.name, Datapath: el.dp})
	}
	return out
}

// QueueSockets returns every AF_XDP socket the workers own, for an
// observer to read their statistics (afxdp.Socket.Stats may run beside the
// worker). Stop closes them: an observer must stop reading them (e.g.
// metrics.Collector.RemoveSocket) before it calls Stop.
func (e *Engine) QueueSockets() []QueueSocket {
	var out []QueueSocket
	for _, w := range e.workers {
		for li, s := range w.socks {
			if s != nil {
				out = append(out, QueueSocket{Link: e.links[li].name, Queue: w.q, Socket: s})
			}
		}
	}
	return out
}
