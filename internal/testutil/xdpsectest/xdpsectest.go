// Package xdpsectest runs the built xdpsec binary as a daemon for end-to-end
// tests: it builds cmd/xdpsec once per test binary, gives each test a bpffs of
// its own for the pins, writes configs with their keys in 0600 files, starts
// `xdpsec run` inside a test namespace, waits for its control socket, runs
// CLI commands against it, reads `stats -j`, and stops it by its PID.
//
// A package that calls Binary (directly or through StartDaemon) runs its
// tests through Main, which removes the built binary at the end:
//
//	func TestMain(m *testing.M) { xdpsectest.Main(m) }
package xdpsectest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/xdpsec/xdpsec/internal/testutil"
	"golang.org/x/sys/unix"
)

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// Binary builds cmd/xdpsec once per test binary, into a temporary directory
// that Main removes, and returns its path. The binary is not stripped
// (profiles need its symbols). A failed build fails every test that asks.
func Binary(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "xdpsectest-bin-")
		if err != nil {
			buildErr = fmt.Errorf("build xdpsec: %w", err)
			return
		}
		binDir = dir
		path := filepath.Join(dir, "xdpsec")
		out, err := exec.Command("go", "build", "-o", path, "github.com/xdpsec/xdpsec/cmd/xdpsec").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build cmd/xdpsec: %w: %s", err, out)
			return
		}
		binPath = path
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return binPath
}

// Main runs the package's tests and removes the binary Binary built, then
// exits with the tests' status. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// MountBPFFS mounts a bpffs (mode 0700) on a fresh temporary directory and
// returns its path; the test's cleanup unmounts it. Daemons started through
// `ip netns exec` see it (that command hides /sys/fs/bpf), and pins there
// outlive a killed daemon, as fail-open needs.
func MountBPFFS(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		tb.Fatalf("mount bpffs on %s: %v", dir, err)
	}
	tb.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// Config is one daemon's configuration on disk.
type Config struct {
	// Path is the config file, NAME.conf.
	Path string
	// Keys is the key file, NAME.keys, or "" when the config has none.
	Keys string
	// Socket is the control socket the daemon is told to use, in a run/
	// directory beside the config.
	Socket string
}

// WriteConfig writes lines as the config file dir/NAME.conf and, when
// keyLines is not empty, keyLines as dir/NAME.keys. Both files are mode 0600
// (xdpsec refuses keys others can read, and a config may hold SAs itself).
// The config must name its key file itself (`keys NAME.keys`).
func WriteConfig(tb testing.TB, dir, name string, lines, keyLines []string) Config {
	tb.Helper()
	c := Config{Path: filepath.Join(dir, name+".conf"), Socket: filepath.Join(dir, "run", "control.sock")}
	if err := os.WriteFile(c.Path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		tb.Fatalf("write config: %v", err)
	}
	if len(keyLines) > 0 {
		c.Keys = filepath.Join(dir, name+".keys")
		if err := os.WriteFile(c.Keys, []byte(strings.Join(keyLines, "\n")+"\n"), 0o600); err != nil {
			tb.Fatalf("write key file: %v", err)
		}
	}
	return c
}

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

// ReadExample returns the lines of examples/FILE of the module (the shipped
// example configs), without the final newline.
func ReadExample(tb testing.TB, file string) []string {
	tb.Helper()
	rootOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		mod := strings.TrimSpace(string(out))
		if err != nil || mod == "" || mod == os.DevNull {
			rootErr = fmt.Errorf("find the module root (go env GOMOD: %q): %v", mod, err)
			return
		}
		rootDir = filepath.Dir(mod)
	})
	if rootErr != nil {
		tb.Fatal(rootErr)
	}
	b, err := os.ReadFile(filepath.Join(rootDir, "examples", file))
	if err != nil {
		tb.Fatalf("read example: %v", err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// LogBuffer is testutil.LogBuffer, kept under this name for the daemon
// tests.
type LogBuffer = testutil.LogBuffer

// ErrNotRunning is what Signal returns once the daemon has exited.
var ErrNotRunning = errors.New("xdpsec run is not running")
