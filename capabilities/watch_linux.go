//go:build linux

package capabilities

import (
	"context"
	"fmt"
	"net"
	"sync"

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

// WatchLink subscribes to RTM_NEWLINK/RTM_DELLINK (netlink.LinkSubscribe)
// in namespace ns (nil: the caller's) before it returns, so no event after
// the call is missed, then turns updates for the link called name into
// changes of h: link-down/up, mtu-change, queue-change. A deleted link is
// reported as link-down. The watch ends when ctx is done, Stop is called or
// the netlink socket fails.
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
	go func() {
		defer close(w.done)
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
			case u, ok := <-updates:
				if !ok {
					w.setErr(fmt.Errorf("watch link %s: netlink subscription closed", name))
					return
				}
				a := u.Link.Attrs()
				if a == nil || a.Name != name {
					continue
				}
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
				if u.Header.Type == unix.RTM_DELLINK {
					li.Up, li.OperState = false, "deleted"
				}
				h.LinkChanged(li)
			}
		}
	}()
	return w, nil
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
