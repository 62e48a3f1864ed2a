//go:build linux

package capabilities

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// LinkWatch follows netlink link updates for one link and feeds them to a
// Hub (Hub.LinkChanged). Stop ends it; Err reports why it ended on its own.
type LinkWatch struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	err    error
}

// LinkPollInterval is how often WatchLink re-reads the link besides
// following its netlink updates: attaching or detaching XDP through a
// bpf_link (as xdpsec does) and changing a veth's channels with ethtool
// send no RTM_NEWLINK, so only a fresh read sees them.
const LinkPollInterval = time.Second

// WatchLink subscribes to RTM_NEWLINK/RTM_DELLINK (netlink.LinkSubscribe)
// in namespace ns (nil: the caller's) before it returns, so no event after
// the call is missed, then turns updates for the link called name into
// changes of h: link-down/up, mtu-change, queue-change, xdp-fallback (see
// Hub.LinkChanged). It also re-reads the link every LinkPollInterval, for
// the changes that send no update. A deleted link is reported as
// link-down. The watch ends when ctx is done, Stop is called or the
// netlink socket fails.
func WatchLink(ctx context.Context, h *Hub, name string, ns *netns.NsHandle) (*LinkWatch, error) {
	ctx, cancel := context.WithCancel(ctx)
	updates := make(chan netlink.LinkUpdate, 64)
	stop := make(chan struct{})
	w := &LinkWatch{cancel: cancel, done: make(chan struct{})}
	opts := netlink.LinkSubscribeOptions{
		Namespace: ns,
		ErrorCallback: func(err error) {
			if ctx.Err() == nil { // errors after Stop are the socket closing
				w.setErr(fmt.Errorf("watch link %s: %w", name, err))
			}
		},
	}
	if err := netlink.LinkSubscribeWithOptions(updates, stop, opts); err != nil {
		cancel()
		return nil, fmt.Errorf("watch link %s: subscribe to netlink link updates: %w", name, err)
	}
	var (
		nh  *netlink.Handle
		err error
	)
	if ns != nil {
		nh, err = netlink.NewHandleAt(*ns)
	} else {
		nh, err = netlink.NewHandle()
	}
	if err != nil {
		cancel()
		close(stop)
		for range updates {
		}
		return nil, fmt.Errorf("watch link %s: open a netlink handle: %w", name, err)
	}
	poll := time.NewTicker(LinkPollInterval)
	go func() {
		defer close(w.done)
		defer nh.Close()
		defer poll.Stop()
		defer func() {
			// Closing stop closes the socket, which wakes netlink's reader;
			// drain so it is never stuck sending to us, until it closes
			// updates.
			cancel()
			close(stop)
			for range updates {
			}
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case <-poll.C:
				// A link that is gone is the RTM_DELLINK's to report.
				if l, err := nh.LinkByName(name); err == nil {
					h.LinkChanged(linkInfo(l.Attrs()))
				}
			case u, ok := <-updates:
				if !ok {
					w.setErr(fmt.Errorf("watch link %s: netlink subscription closed", name))
					return
				}
				a := u.Link.Attrs()
				if a == nil || a.Name != name {
					continue
				}
				li := linkInfo(a)
				if u.Header.Type == unix.RTM_DELLINK {
					li.Up, li.OperState = false, "deleted"
				}
				h.LinkChanged(li)
			}
		}
	}()
	return w, nil
}

// linkInfo is what LinkChanged needs of a netlink link.
func linkInfo(a *netlink.LinkAttrs) LinkInfo {
	li := LinkInfo{
		Name:      a.Name,
		Index:     a.Index,
		MTU:       a.MTU,
		Up:        a.Flags&net.FlagUp != 0,
		OperState: a.OperState.String(),
	}
	li.RxQueues, li.QueueSource = rxQueues(a)
	if a.Xdp != nil && a.Xdp.Attached {
		li.AttachedXDP = attachMode(a.Xdp.AttachMode)
	}
	return li
}

func (w *LinkWatch) setErr(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
}

// Stop ends the watch and waits for its goroutine to finish.
func (w *LinkWatch) Stop() {
	w.cancel()
	<-w.done
}

// Done is closed when the watch has ended.
func (w *LinkWatch) Done() <-chan struct{} { return w.done }

// Err returns why the watch ended on its own, or nil.
func (w *LinkWatch) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}
