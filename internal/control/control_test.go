package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// childEnv makes the test binary act as an unprivileged client (see
// TestMain and runAsNobody).
const childEnv = "XDPSEC_CONTROL_TEST_CHILD_SOCKET"

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		os.Exit(childClient(path))
	}
	os.Exit(m.Run())
}

// childClient dials path and calls "echo"; it prints the error (or "ok")
// and exits 0, so the parent judges the text.
func childClient(path string) int {
	fmt.Printf("uid=%d\n", os.Getuid())
	c, err := Dial(path)
	if err != nil {
		fmt.Printf("dial: %v (permission=%v)\n", err, errors.Is(err, ErrPermission))
		return 0
	}
	defer c.Close()
	var out string
	err = c.Call("echo", "hi", &out)
	fmt.Printf("call: %v (permission=%v) result=%q\n", err, errors.Is(err, ErrPermission), out)
	return 0
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the control socket serves root only")
	}
}

// newServer listens on a fresh socket, registers the test ops and serves;
// the server is closed (and checked to leave nothing behind) at the end.
func newServer(t *testing.T) *Server {
	t.Helper()
	requireRoot(t)
	path := filepath.Join(t.TempDir(), "run", "control.sock")
	s, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Handle("echo", func(ctx context.Context, args json.RawMessage) (any, error) {
		var v any
		if err := json.Unmarshal(args, &v); err != nil {
			return nil, fmt.Errorf("want any JSON value: %w", err)
		}
		return v, nil
	})
	s.Handle("fail", func(context.Context, json.RawMessage) (any, error) {
		return nil, errors.New("no SA with spi 0x1234 to 192.0.2.2\n(list them with `xdpsec sa list`)")
	})
	s.Handle("panic", func(context.Context, json.RawMessage) (any, error) { panic("boom") })
	s.HandleStream("count", func(ctx context.Context, args json.RawMessage, send func(any) error) error {
		var n int
		if err := json.Unmarshal(args, &n); err != nil {
			return fmt.Errorf("want a count: %w", err)
		}
		for i := 0; i < n; i++ {
			if err := send(map[string]int{"i": i}); err != nil {
				return err
			}
		}
		if n == 3 {
			return errors.New("stopped at three")
		}
		return nil
	})
	s.HandleStream("forever", func(ctx context.Context, args json.RawMessage, send func(any) error) error {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
				if err := send(i); err != nil {
					return err
				}
			}
		}
	})
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		for _, f := range []string{path, path + ".lock"} {
			if _, err := os.Lstat(f); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s left behind after Close (%v)", f, err)
			}
		}
	})
	return s
}

func TestPermissions(t *testing.T) {
	s := newServer(t)
	fi, err := os.Lstat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a 0600 socket", fi.Mode())
	}
	di, err := os.Stat(filepath.Dir(s.Path()))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, want 0700", di.Mode())
	}
}

func TestUnsafeDirectoryRefused(t *testing.T) {
	requireRoot(t)
	dir := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	_, err := Listen(filepath.Join(dir, "c.sock"))
	if !errors.Is(err, ErrUnsafePath) || !strings.Contains(err.Error(), "chmod 700") {
		t.Fatalf("Listen in a 0755 directory: %v, want ErrUnsafePath saying chmod 700", err)
	}
	file := filepath.Join(t.TempDir(), "notasocket")
	os.WriteFile(file, nil, 0o600)
	if _, err := Listen(file); !errors.Is(err, ErrUnsafePath) {
		t.Fatalf("Listen over a regular file: %v, want ErrUnsafePath", err)
	}
}

func TestRoundTrip(t *testing.T) {
	s := newServer(t)
	c, err := Dial(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	type sa struct {
		SPI  uint32 `json:"spi"`
		Dst  string `json:"dst"`
		Algo string `json:"algo"`
	}
	in := sa{SPI: 0x1234, Dst: "192.0.2.2", Algo: "rfc4106(gcm(aes))"}
	for i := 0; i < 3; i++ { // several calls on one connection
		var out sa
		if err := c.Call("echo", in, &out); err != nil {
			t.Fatal(err)
		}
		if out != in {
			t.Fatalf("echo %+v, got %+v", in, out)
		}
	}
	// Concurrent callers share the client.
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			var out int
			if err := c.Call("echo", g, &out); err != nil || out != g {
				t.Errorf("concurrent echo %d: %d, %v", g, out, err)
			}
		}(g)
	}
	wg.Wait()
}

func TestErrors(t *testing.T) {
	s := newServer(t)
	c, err := Dial(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var re *RemoteError
	err = c.Call("fail", nil, nil)
	if !errors.As(err, &re) || strings.Contains(re.Msg, "\n") || !strings.Contains(re.Msg, "no SA with spi 0x1234") {
		t.Fatalf("fail: %v, want a one-line RemoteError", err)
	}
	err = c.Call("no.such.op", nil, nil)
	if !errors.Is(err, ErrUnknownOp) || !strings.Contains(err.Error(), "count, echo, fail, forever, panic") {
		t.Fatalf("unknown op: %v, want ErrUnknownOp listing the ops", err)
	}
	if err := c.Call("echo", nil, nil); err == nil || !strings.Contains(err.Error(), "want any JSON value") {
		t.Fatalf("echo without args: %v", err)
	}
	if err := c.Call("panic", nil, nil); err == nil || !strings.Contains(err.Error(), "internal error in panic") {
		t.Fatalf("panicking handler: %v", err)
	}
	// The server survived all that.
	var out string
	if err := c.Call("echo", "still here", &out); err != nil || out != "still here" {
		t.Fatalf("after errors: %q, %v", out, err)
	}
	// Raw garbage gets a bad-request line and the connection stays usable.
	conn, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "this is not json\n{\"op\":\"echo\",\"args\":1}\n")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	var got string
	for !strings.Contains(got, `"result":1`) {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("raw connection: %v after %q", err, got)
		}
		got += string(buf[:n])
	}
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"ok":false`) || !strings.Contains(lines[0], `"code":"bad-request"`) {
		t.Fatalf("raw answers: %q", lines)
	}
}

func TestStream(t *testing.T) {
	s := newServer(t)
	c, err := Dial(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got []int
	err = c.Stream(context.Background(), "count", 5, func(ev json.RawMessage) error {
		var e struct{ I int }
		if err := json.Unmarshal(ev, &e); err != nil {
			return err
		}
		got = append(got, e.I)
		return nil
	})
	if err != nil || fmt.Sprint(got) != "[0 1 2 3 4]" {
		t.Fatalf("stream count 5: %v, events %v", err, got)
	}
	// A stream that ends in error delivers its events, then the error.
	got = nil
	err = c.Stream(context.Background(), "count", 3, func(ev json.RawMessage) error { got = append(got, 0); return nil })
	var re *RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Msg, "stopped at three") || len(got) != 3 {
		t.Fatalf("stream count 3: %v after %d events", err, len(got))
	}
	// The client stops a stream from its callback...
	stopErr := errors.New("enough")
	n := 0
	err = c.Stream(context.Background(), "forever", nil, func(json.RawMessage) error {
		if n++; n == 10 {
			return stopErr
		}
		return nil
	})
	if !errors.Is(err, stopErr) {
		t.Fatalf("callback stop: %v", err)
	}
	// ... or with its context.
	ctx, cancel := context.WithCancel(context.Background())
	n = 0
	err = c.Stream(ctx, "forever", nil, func(json.RawMessage) error {
		if n++; n == 5 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("context stop: %v", err)
	}
	// Calls on the client's own connection still work meanwhile.
	var out int
	if err := c.Call("echo", 7, &out); err != nil || out != 7 {
		t.Fatalf("call after streams: %d, %v", out, err)
	}
}

// TestCloseEndsStreams: closing the server ends a running stream and
// removes the socket; the client's stream returns.
func TestCloseEndsStreams(t *testing.T) {
	s := newServer(t)
	c, err := Dial(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		var once sync.Once
		done <- c.Stream(context.Background(), "forever", nil, func(json.RawMessage) error {
			once.Do(func() { close(started) })
			return nil
		})
	}()
	<-started
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("stream still running 5s after server Close")
	}
	if _, err := Dial(s.Path()); !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("Dial after Close: %v, want ErrNoDaemon", err)
	}
}

// TestSecondDaemonRefused: a live server makes a second Listen on the same
// path fail with a clear message; a stale socket file (its daemon died
// without cleaning up) is replaced.
func TestSecondDaemonRefused(t *testing.T) {
	s := newServer(t)
	_, err := Listen(s.Path())
	if !errors.Is(err, ErrAlreadyRunning) || !strings.Contains(err.Error(), "stop it first") {
		t.Fatalf("second Listen: %v, want ErrAlreadyRunning", err)
	}
	// A live socket without the lock (a daemon of another build) is
	// detected by connecting.
	os.Remove(s.Path() + ".lock")
	_, err = Listen(s.Path())
	if !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("Listen over a live socket without lock: %v, want ErrAlreadyRunning", err)
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	requireRoot(t)
	path := filepath.Join(t.TempDir(), "d", "control.sock")
	os.MkdirAll(filepath.Dir(path), 0o700)
	// A socket bound and closed without unlinking: what a killed daemon leaves.
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	if _, err := Dial(path); !errors.Is(err, ErrNoDaemon) || !strings.Contains(err.Error(), "gone") {
		t.Fatalf("Dial to a stale socket: %v, want ErrNoDaemon saying the daemon is gone", err)
	}
	s, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	go s.Serve()
	defer s.Close()
	s.Handle("echo", func(_ context.Context, a json.RawMessage) (any, error) { return a, nil })
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out int
	if err := c.Call("echo", 5, &out); err != nil || out != 5 {
		t.Fatalf("call on the new server: %d, %v", out, err)
	}
}

// runAsNobody runs this test binary as uid/gid 65534 with the given
// ambient capabilities, as a client of path, and returns its output. The
// binary is copied where nobody may execute it.
func runAsNobody(t *testing.T, path string, caps []uintptr) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "xdpsec-control-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "control.test")
	src, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run=^$")
	cmd.Env = []string{childEnv + "=" + path}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: 65534, Gid: 65534},
		AmbientCaps: caps,
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child as nobody: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "uid=65534") {
		t.Fatalf("child did not run as nobody:\n%s", out)
	}
	return string(out)
}

// TestNonRootRefusedByPermissions: a non-root process cannot even reach
// the socket (0700 directory, 0600 socket) and is told why.
func TestNonRootRefusedByPermissions(t *testing.T) {
	s := newServer(t)
	out := runAsNobody(t, s.Path(), nil)
	if !strings.Contains(out, "dial: permission denied") || !strings.Contains(out, "root-only") || !strings.Contains(out, "permission=true") {
		t.Fatalf("unprivileged client:\n%s", out)
	}
}

// TestNonRootRefusedByPeerCred: a non-root process that gets past the file
// permissions (CAP_DAC_OVERRIDE) is refused by the SO_PEERCRED check, with
// a line that says why and what to do.
func TestNonRootRefusedByPeerCred(t *testing.T) {
	s := newServer(t)
	const capDACOverride = 1
	out := runAsNobody(t, s.Path(), []uintptr{capDACOverride})
	if !strings.Contains(out, "call: permission denied: the xdpsec control socket accepts only root (peer uid 65534)") ||
		!strings.Contains(out, "permission=true") || !strings.Contains(out, `result=""`) {
		t.Fatalf("client with CAP_DAC_OVERRIDE as nobody:\n%s", out)
	}
}

// TestNoGoroutineLeak: after Close, no goroutine of the server or its
// connections remains.
func TestNoGoroutineLeak(t *testing.T) {
	requireRoot(t)
	before := runtime.NumGoroutine()
	func() {
		s := newServerNoCleanup(t)
		defer s.Close()
		c, err := Dial(s.Path())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var out int
		c.Call("echo", 1, &out)
		ctx, cancel := context.WithCancel(context.Background())
		go func() { time.Sleep(20 * time.Millisecond); cancel() }()
		c.Stream(ctx, "forever", nil, func(json.RawMessage) error { return nil })
	}()
	var now int
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if now = runtime.NumGoroutine(); now <= before {
			return
		}
	}
	buf := make([]byte, 1<<16)
	t.Fatalf("%d goroutines before, %d after:\n%s", before, now, buf[:runtime.Stack(buf, true)])
}

func newServerNoCleanup(t *testing.T) *Server {
	path := filepath.Join(t.TempDir(), "s", "control.sock")
	s, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Handle("echo", func(_ context.Context, a json.RawMessage) (any, error) { return a, nil })
	s.HandleStream("forever", func(ctx context.Context, _ json.RawMessage, send func(any) error) error {
		for i := 0; ; i++ {
			if err := send(i); err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
	})
	go s.Serve()
	return s
}
