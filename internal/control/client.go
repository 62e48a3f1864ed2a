package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"
)

// RemoteError is a failure the daemon reported: Msg is its one line.
type RemoteError struct {
	Op   string
	Msg  string
	Code string // CodePermission, CodeUnknownOp, CodeBadRequest or ""
}

func (e *RemoteError) Error() string { return e.Msg }

// Is makes errors.Is(err, ErrPermission / ErrUnknownOp) work on a
// RemoteError with the matching code.
func (e *RemoteError) Is(target error) bool {
	switch target {
	case ErrPermission:
		return e.Code == CodePermission
	case ErrUnknownOp:
		return e.Code == CodeUnknownOp
	}
	return false
}

// Client talks to a daemon over its control socket.
//
// Concurrency: a Client may be shared by goroutines; Calls are serialised
// on one connection. Each Stream opens its own connection, so streams and
// calls run side by side.
type Client struct {
	path string

	mu   sync.Mutex
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
}

// Dial connects to the daemon at path (DefaultPath if empty). The errors
// say what to do: ErrNoDaemon when nothing listens, ErrPermission when the
// socket is not ours to open.
func Dial(path string) (*Client, error) {
	if path == "" {
		path = DefaultPath
	}
	c := &Client{path: path}
	conn, err := c.dial()
	if err != nil {
		return nil, err
	}
	c.setConn(conn)
	return c, nil
}

func (c *Client) dial() (net.Conn, error) {
	conn, err := net.DialTimeout("unix", c.path, 5*time.Second)
	switch {
	case err == nil:
		return conn, nil
	case errors.Is(err, syscall.ENOENT):
		return nil, fmt.Errorf("%w at %s: is `xdpsec run` running, and is the socket path right?", ErrNoDaemon, c.path)
	case errors.Is(err, syscall.ECONNREFUSED):
		return nil, fmt.Errorf("%w at %s: the socket is left from a daemon that is gone; start `xdpsec run` again", ErrNoDaemon, c.path)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return nil, fmt.Errorf("%w on %s: the control socket is root-only; run the command as root (e.g. with sudo)", ErrPermission, c.path)
	}
	return nil, fmt.Errorf("connect to control socket %s: %w", c.path, err)
}

func (c *Client) setConn(conn net.Conn) {
	c.conn = conn
	c.r = bufio.NewReaderSize(conn, 64<<10)
	c.w = bufio.NewWriter(conn)
}

// Close closes the client's connection. Streams end with their contexts.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}

// Call sends op with args (marshalled to JSON; nil sends none) and
// decodes the result into result (a pointer; nil ignores it). A failure
// reported by the daemon is a *RemoteError.
func (c *Client) Call(op string, args, result any) error {
	line, err := encodeRequest(op, args)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return ErrClosed
	}
	_, werr := c.w.Write(line)
	if werr == nil {
		werr = c.w.Flush()
	}
	// Read even when the write failed: a daemon that refuses our
	// credentials answers and closes before reading the request.
	resp, err := readResponse(c.r)
	if err != nil {
		if werr != nil {
			err = werr
		}
		return c.broken(op, err)
	}
	if resp.Code == CodePermission {
		// The daemon closes the connection after refusing us.
		c.conn.Close()
		c.conn = nil
	}
	return decodeResult(op, resp, result)
}

// broken closes a connection that failed mid-call (it may hold half a
// response); the next Call redials.
func (c *Client) broken(op string, err error) error {
	c.conn.Close()
	c.conn = nil
	if conn, derr := c.dial(); derr == nil {
		c.setConn(conn)
	}
	return fmt.Errorf("%s: control connection to %s: %w", op, c.path, err)
}

// Stream sends a stream op and calls fn for each event until the stream
// ends (nil, or the daemon's *RemoteError), fn returns an error (returned
// as is; the stream is closed) or ctx is done (ctx.Err()).
func (c *Client) Stream(ctx context.Context, op string, args any, fn func(event json.RawMessage) error) error {
	line, err := encodeRequest(op, args)
	if err != nil {
		return err
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	_, werr := conn.Write(line)
	r := bufio.NewReaderSize(conn, 64<<10)
	for {
		resp, err := readResponse(r)
		if err != nil {
			if werr != nil {
				err = werr
			}
			return c.streamErr(ctx, op, err)
		}
		if resp.OK != nil {
			return decodeResult(op, resp, nil)
		}
		if err := fn(resp.Event); err != nil {
			return err
		}
	}
}

func (c *Client) streamErr(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("%s: control stream from %s: %w", op, c.path, err)
}

func encodeRequest(op string, args any) ([]byte, error) {
	req := request{Op: op}
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return nil, fmt.Errorf("%s: encode arguments: %w", op, err)
		}
		req.Args = b
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func readResponse(r *bufio.Reader) (response, error) {
	line, err := readLine(r)
	if err != nil {
		return response{}, err
	}
	var resp response
	if err := json.Unmarshal(line, &resp); err != nil {
		return response{}, fmt.Errorf("bad response line from the daemon: %w", err)
	}
	if resp.OK == nil && resp.Event == nil {
		return response{}, errors.New("bad response line from the daemon: neither \"ok\" nor \"event\"")
	}
	return resp, nil
}

func decodeResult(op string, resp response, result any) error {
	if !*resp.OK {
		return &RemoteError{Op: op, Msg: resp.Error, Code: resp.Code}
	}
	if result == nil || len(resp.Result) == 0 {
		return nil
	}
	if err := json.Unmarshal(resp.Result, result); err != nil {
		return fmt.Errorf("%s: decode result: %w", op, err)
	}
	return nil
}
