// Package control is the xdpsec daemon's control socket: a root-only unix
// stream socket carrying JSON lines.
//
// # Protocol
//
// Each request is one line:
//
//	{"op":"sa.add","args":{...}}
//
// and a call is answered by one line:
//
//	{"ok":true,"result":...}
//	{"ok":false,"error":"one clear line","code":"..."}
//
// A connection carries any number of calls, one at a time. A stream op
// (registered with HandleStream, e.g. "stats.watch") answers with any
// number of event lines and then one final line as above, after which the
// server closes the connection:
//
//	{"event":...}
//	{"event":...}
//	{"ok":true}
//
// The client ends a stream early by closing the connection; the handler's
// context is then cancelled. Lines are limited to MaxLine bytes.
//
// # Who may talk
//
// Three locks, each enough on its own: the socket's directory is 0700 and
// owned by root, the socket is 0600, and every accepted connection's peer
// credentials (SO_PEERCRED) must be uid 0, so even a process that got past
// the file permissions (CAP_DAC_OVERRIDE) is refused with a clear error.
//
// # One daemon per socket
//
// Listen takes an exclusive flock on PATH.lock for the server's life. A
// socket file left by a dead daemon (connect is refused) is replaced; a
// live one makes Listen fail with ErrAlreadyRunning.
package control

import (
	"encoding/json"
	"errors"
	"strings"
)

// DefaultPath is where the daemon listens unless told otherwise.
const DefaultPath = "/run/xdpsec/control.sock"

// MaxLine is the longest request or response line accepted (1 MiB).
const MaxLine = 1 << 20

// Errors callers tell apart with errors.Is.
var (
	// ErrAlreadyRunning: another live daemon serves the socket path.
	ErrAlreadyRunning = errors.New("another xdpsec daemon is running")
	// ErrPermission: the peer is not root (server side: refused; client
	// side: the socket or its directory cannot be opened, or the server
	// refused our credentials).
	ErrPermission = errors.New("permission denied")
	// ErrNoDaemon: nothing listens on the socket path (missing or stale).
	ErrNoDaemon = errors.New("no xdpsec daemon")
	// ErrUnknownOp: the server has no handler for the op.
	ErrUnknownOp = errors.New("unknown op")
	// ErrUnsafePath: the socket's directory is accessible to others than
	// root, or the path exists and is not a socket.
	ErrUnsafePath = errors.New("unsafe control socket path")
	// ErrClosed: the server or client was closed.
	ErrClosed = errors.New("control connection closed")
)

// Codes in the "code" field of a failed response, for errors a client
// tells apart. Any other failure has no code.
const (
	CodePermission = "permission"
	CodeUnknownOp  = "unknown-op"
	CodeBadRequest = "bad-request"
)

// request is one request line.
type request struct {
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

// response is one response or event line.
type response struct {
	OK     *bool           `json:"ok,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
	Code   string          `json:"code,omitempty"`
	Event  json.RawMessage `json:"event,omitempty"`
}

// oneLine makes an error message fit one line.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }), "; ")
}
