package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// HandlerFunc serves one call: args is the request's "args" (nil when
// absent). The result is marshalled to JSON as "result"; an error becomes
// the response's one-line "error" (say what is wrong and how to fix it).
// ctx is cancelled when the server closes.
type HandlerFunc func(ctx context.Context, args json.RawMessage) (any, error)

// StreamFunc serves a stream: it calls send for each event (send fails
// once the client has gone or the server closes) and returns when the
// stream is over (nil: normal end) or ctx is cancelled (the client left,
// or the server closes).
type StreamFunc func(ctx context.Context, args json.RawMessage, send func(event any) error) error

// Server serves the control socket.
//
// Concurrency: Handle and HandleStream may be called at any time from any
// goroutine (typically before Serve). Each connection is served by its own
// goroutine, so handlers run concurrently with each other and must guard
// shared state themselves. Close may be called from any goroutine, once
// or more.
type Server struct {
	path string
	ln   *net.UnixListener
	lock *os.File

	mu      sync.Mutex
	calls   map[string]HandlerFunc
	streams map[string]StreamFunc
	conns   map[net.Conn]struct{}
	closed  bool

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	running atomic.Int32 // stream handlers in progress

	closeOnce sync.Once
	closeErr  error
}

// Listen creates the socket at path (see the package doc for the
// directory, permission and stale-socket rules) and returns a Server that
// serves nothing until Serve is called.
func Listen(path string) (*Server, error) {
	if path == "" {
		path = DefaultPath
	}
	path = filepath.Clean(path)
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create control socket directory %s: %w", dir, err)
	}
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	lock, err := lockPath(path + ".lock")
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			lock.Close()
		}
	}()
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on control socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // Close removes it, after the last connection
	// The directory (0700) already keeps others out between bind and chmod.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		os.Remove(path)
		return nil, fmt.Errorf("chmod 600 control socket %s: %w", path, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		path: path, ln: ln, lock: lock,
		calls: map[string]HandlerFunc{}, streams: map[string]StreamFunc{}, conns: map[net.Conn]struct{}{},
		ctx: ctx, cancel: cancel,
	}
	ok = true
	return s, nil
}

// checkDir refuses a directory that others than root can enter or write:
// the socket's permissions alone must not be the only lock.
func checkDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("control socket directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("control socket directory %s is not a directory: %w", dir, ErrUnsafePath)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid != uint32(os.Geteuid()) || fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("control socket directory %s has mode %04o owner uid %d; it must be 0700 and ours: run `chmod 700 %s`, or pick another socket path: %w",
			dir, fi.Mode().Perm(), st.Uid, dir, ErrUnsafePath)
	}
	return nil
}

// lockPath takes an exclusive, non-blocking flock on name, and checks
// that name still is the file locked (a previous owner may have removed
// it between our open and our flock).
func lockPath(name string) (*os.File, error) {
	for try := 0; try < 5; try++ {
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open control lock %s: %w", name, err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, fmt.Errorf("%w: %s is locked by another daemon; stop it first or use another socket path", ErrAlreadyRunning, name)
			}
			return nil, fmt.Errorf("lock %s: %w", name, err)
		}
		var held, now unix.Stat_t
		if unix.Fstat(int(f.Fd()), &held) == nil && unix.Stat(name, &now) == nil && held.Dev == now.Dev && held.Ino == now.Ino {
			return f, nil
		}
		f.Close() // removed under us: take the new one
	}
	return nil, fmt.Errorf("lock %s: it keeps being replaced", name)
}

// removeStale removes a socket file no daemon listens on; a live one is
// ErrAlreadyRunning.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; remove it or pick another socket path: %w", path, ErrUnsafePath)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w: a daemon answers on %s; stop it first or use another socket path", ErrAlreadyRunning, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probe existing control socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale control socket %s: %w", path, err)
	}
	return nil
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

// Handle registers h for op, replacing any handler of that name.
func (s *Server) Handle(op string, h HandlerFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.streams, op)
	s.calls[op] = h
}

// HandleStream registers a stream handler for op, replacing any handler
// of that name.
func (s *Server) HandleStream(op string, h StreamFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.calls, op)
	s.streams[op] = h
}

// Serve accepts connections until Close, then returns nil (or the accept
// error that stopped it).
func (s *Server) Serve() error {
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				time.Sleep(50 * time.Millisecond) // out of fds: let some close
				continue
			}
			return fmt.Errorf("accept on %s: %w", s.path, err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// WaitStreams waits at most d for the stream handlers in progress to end
// on their own, and reports whether they did. A daemon calls it between
// publishing its last events (say, engine stopped) and Close, so that
// streams that end on such an event deliver it instead of being cut.
func (s *Server) WaitStreams(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for s.running.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// Close stops accepting, cancels handlers and streams, closes every
// connection, waits for their goroutines, and removes the socket file and
// its lock. Calls in flight may fail with a closed connection.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.cancel()
		s.ln.Close()
		s.wg.Wait()
		if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.closeErr = fmt.Errorf("remove control socket %s: %w", s.path, err)
		}
		// Removed while still locked: a newcomer that opened the old file
		// sees the inode change and retries (lockPath).
		os.Remove(s.lock.Name())
		s.lock.Close()
	})
	return s.closeErr
}

func peerUID(c *net.UnixConn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return cred.Uid, nil
}

func (s *Server) serveConn(c *net.UnixConn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	w := bufio.NewWriter(c)
	uid, err := peerUID(c)
	if err != nil || uid != 0 {
		msg := fmt.Sprintf("permission denied: the xdpsec control socket accepts only root (peer uid %d); run the command as root, e.g. with sudo", uid)
		if err != nil {
			msg = "permission denied: cannot read the peer's credentials: " + err.Error()
		}
		writeLine(w, response{OK: ptr(false), Error: msg, Code: CodePermission})
		return
	}
	r := bufio.NewReaderSize(c, 64<<10)
	for {
		line, err := readLine(r)
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				writeLine(w, response{OK: ptr(false), Error: fmt.Sprintf("bad request: line longer than %d bytes", MaxLine), Code: CodeBadRequest})
			}
			return
		}
		if len(strings.TrimSpace(string(line))) == 0 {
			continue
		}
		var req request
		if err := json.Unmarshal(line, &req); err != nil || req.Op == "" {
			msg := "bad request: want one JSON object per line like {\"op\":\"stats\",\"args\":{}}"
			if err != nil {
				msg += ": " + err.Error()
			}
			if writeLine(w, response{OK: ptr(false), Error: msg, Code: CodeBadRequest}) != nil {
				return
			}
			continue
		}
		s.mu.Lock()
		call, stream := s.calls[req.Op], s.streams[req.Op]
		known := s.opsLocked()
		s.mu.Unlock()
		switch {
		case call != nil:
			if writeLine(w, s.runCall(req, call)) != nil {
				return
			}
		case stream != nil:
			s.runStream(c, r, w, req, stream)
			return // a stream ends its connection
		default:
			msg := fmt.Sprintf("unknown op %q (this daemon knows: %s)", req.Op, strings.Join(known, ", "))
			if writeLine(w, response{OK: ptr(false), Error: msg, Code: CodeUnknownOp}) != nil {
				return
			}
		}
	}
}

func (s *Server) opsLocked() []string {
	ops := make([]string, 0, len(s.calls)+len(s.streams))
	for op := range s.calls {
		ops = append(ops, op)
	}
	for op := range s.streams {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	return ops
}

func (s *Server) runCall(req request, h HandlerFunc) (resp response) {
	defer func() {
		if p := recover(); p != nil {
			resp = response{OK: ptr(false), Error: fmt.Sprintf("internal error in %s: %v (please report it with the daemon log)", req.Op, p)}
			fmt.Fprintf(os.Stderr, "control: panic in %s: %v\n%s", req.Op, p, debug.Stack())
		}
	}()
	result, err := h(s.ctx, req.Args)
	if err != nil {
		return response{OK: ptr(false), Error: oneLine(req.Op + ": " + err.Error())}
	}
	b, err := json.Marshal(result)
	if err != nil {
		return response{OK: ptr(false), Error: fmt.Sprintf("internal error in %s: encode result: %v", req.Op, err)}
	}
	return response{OK: ptr(true), Result: b}
}

func (s *Server) runStream(c *net.UnixConn, r *bufio.Reader, w *bufio.Writer, req request, h StreamFunc) {
	s.running.Add(1)
	defer s.running.Add(-1)
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	// The client says nothing more during a stream: any read result
	// (EOF, data, error) means it is gone or misbehaving; end the stream.
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		r.ReadByte()
		cancel()
	}()
	var wmu sync.Mutex
	send := func(event any) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b, err := json.Marshal(event)
		if err != nil {
			return fmt.Errorf("encode event: %w", err)
		}
		wmu.Lock()
		defer wmu.Unlock()
		if err := writeLine(w, response{Event: b}); err != nil {
			cancel()
			return fmt.Errorf("send event: %w", err)
		}
		return nil
	}
	err := func() (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("internal error: %v", p)
				fmt.Fprintf(os.Stderr, "control: panic in stream %s: %v\n%s", req.Op, p, debug.Stack())
			}
		}()
		return h(ctx, req.Args, send)
	}()
	wmu.Lock()
	if err != nil && !errors.Is(err, context.Canceled) {
		writeLine(w, response{OK: ptr(false), Error: oneLine(req.Op + ": " + err.Error())})
	} else {
		writeLine(w, response{OK: ptr(true)})
	}
	wmu.Unlock()
	cancel()
	c.CloseRead() // wakes the reader goroutine if the client is still there
	<-readDone
}

var errLineTooLong = errors.New("line too long")

// readLine reads one '\n'-terminated line of at most MaxLine bytes.
func readLine(r *bufio.Reader) ([]byte, error) {
	var buf []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(buf)+len(chunk) > MaxLine {
			return nil, errLineTooLong
		}
		buf = append(buf, chunk...)
		if err == nil {
			return buf, nil
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) && len(buf) > 0 {
			return buf, nil // last line without '\n'
		}
		return nil, err
	}
}

func writeLine(w *bufio.Writer, resp response) error {
	b, err := json.Marshal(resp)
	if err != nil {
		return err
	}
	w.Write(b)
	w.WriteByte('\n')
	return w.Flush()
}

func ptr[T any](v T) *T { return &v }
