package capabilities

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/xdpsec/xdpsec/internal/control"
)

// Control-socket ops for capabilities, served by ServeControl (the daemon)
// and called by ControlGet, ControlSet and ControlWatch (the CLI).
//
//	caps.get    args none                     result ChangeMessage (the latest change)
//	caps.set    args {"settings":["P=V",...]} result ChangeMessage (the change the set published)
//	caps.watch  args none                     events ChangeMessage, the latest first, until the client leaves
const (
	OpGet   = "caps.get"
	OpSet   = "caps.set"
	OpWatch = "caps.watch"
)

// ChangeMessage is a Change as the control socket carries it: one JSON
// object per call result or stream event.
type ChangeMessage struct {
	Seq    uint64 `json:"seq"`
	Reason Reason `json:"reason"`
	Detail string `json:"detail,omitempty"`
	// State is the whole state in Go's JSON encoding, so a Go client renders
	// it with Render exactly as a local probe would be rendered.
	State State `json:"state"`
	// Document is JSONDocument(State, ViewAll), the documented JSON
	// shape, for clients that do not link this package.
	Document map[string]any `json:"document"`
}

// MessageOf returns the ChangeMessage of c.
func MessageOf(c Change) ChangeMessage {
	return ChangeMessage{Seq: c.Seq, Reason: c.Reason, Detail: c.Detail, State: c.State, Document: JSONDocument(c.State, ViewAll)}
}

// SetArgs are the arguments of caps.set: settings as ParseSettings reads
// them ("IPsecV2=esp", "cbc(des)=on").
type SetArgs struct {
	Settings []string `json:"settings"`
}

// watchDepth is how many changes a caps.watch stream may fall behind before
// the oldest is dropped (the gap shows in seq).
const watchDepth = 64

// ServeControl registers caps.get, caps.set and caps.watch on srv, all
// answered from h. Parameters set through caps.set live in h (the daemon's
// memory) until the daemon exits or resets them (Hub.ResetParameters, from
// its config's offload lines on reload); whoever applies the current view
// to the datapath subscribes to h like any other listener.
func ServeControl(srv *control.Server, h *Hub) {
	srv.Handle(OpGet, func(ctx context.Context, args json.RawMessage) (any, error) {
		return MessageOf(h.Last()), nil
	})
	srv.Handle(OpSet, func(ctx context.Context, args json.RawMessage) (any, error) {
		var a SetArgs
		if len(args) > 0 {
			if err := json.Unmarshal(args, &a); err != nil {
				return nil, fmt.Errorf("caps.set arguments: %v (want {\"settings\":[\"PARAM=VALUE\",...]})", err)
			}
		}
		u, err := ParseSettings(a.Settings)
		if err != nil {
			return nil, err
		}
		c, err := h.SetParameters(u)
		if err != nil {
			return nil, err
		}
		return MessageOf(c), nil
	})
	srv.HandleStream(OpWatch, func(ctx context.Context, args json.RawMessage, send func(event any) error) error {
		sub := h.Subscribe(watchDepth)
		defer sub.Close()
		for {
			select {
			case <-ctx.Done():
				return nil
			case c, ok := <-sub.C:
				if !ok {
					return nil
				}
				if err := send(MessageOf(c)); err != nil {
					return err
				}
				// The engine stopping is the last change a daemon
				// publishes: end the stream with it, so the daemon's
				// shutdown (WaitStreams, then Close) delivers it.
				if c.Reason == ReasonEngineStop {
					return nil
				}
			}
		}
	})
}

// changeWire is ChangeMessage without the derived document, which a Go
// client recomputes from State.
type changeWire struct {
	Seq    uint64 `json:"seq"`
	Reason Reason `json:"reason"`
	Detail string `json:"detail,omitempty"`
	State  State  `json:"state"`
}

func (w changeWire) change() Change {
	return Change(w)
}

// ControlGet asks the daemon behind c for its latest change (caps.get).
func ControlGet(c *control.Client) (Change, error) {
	var w changeWire
	if err := c.Call(OpGet, nil, &w); err != nil {
		return Change{}, err
	}
	return w.change(), nil
}

// ControlSet sets parameters in the daemon behind c (caps.set) and returns
// the change it published. The daemon validates the settings.
func ControlSet(c *control.Client, settings []string) (Change, error) {
	var w changeWire
	if err := c.Call(OpSet, SetArgs{Settings: settings}, &w); err != nil {
		return Change{}, err
	}
	return w.change(), nil
}

// ControlWatch follows the daemon's change stream (caps.watch), calling fn
// for each change, the latest first, until ctx is done (ctx.Err()), fn
// fails (its error) or the daemon ends the stream.
func ControlWatch(ctx context.Context, c *control.Client, fn func(Change) error) error {
	return c.Stream(ctx, OpWatch, nil, func(ev json.RawMessage) error {
		var w changeWire
		if err := json.Unmarshal(ev, &w); err != nil {
			return fmt.Errorf("caps.watch event: %w", err)
		}
		return fn(w.change())
	})
}
