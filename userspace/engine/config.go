package engine

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/xdpsec/xdpsec/capabilities"
	"github.com/xdpsec/xdpsec/loader"
	"github.com/xdpsec/xdpsec/userspace/sad"
)

// ErrKeyFileMode is wrapped by LoadConfig when a file holding keys can be
// read by group or others.
var ErrKeyFileMode = errors.New("key file readable by group or others")

// ErrConfigWritable is wrapped by LoadConfig when a file it reads can be
// written by group or others: whoever can write it decides what the daemon,
// which runs as root, attaches to, routes and trusts.
var ErrConfigWritable = errors.New("config file writable by group or others")

// FileConfig is a daemon configuration file: the engine's Config plus the
// lines only the daemon uses. See examples/README.md for the format.
type FileConfig struct {
	Config
	// Control is the control socket path (`control PATH`); empty means
	// the daemon's default.
	Control string
	// Files are the files read: the config and its key files.
	Files []string
	// Offload are the `offload PARAM=VALUE` settings in file order, as
	// written; empty when the file has no offload line.
	Offload []string
	// OffloadUpdate is Offload parsed (capabilities.ParseSettings: a later
	// setting of a parameter wins). The daemon's offload parameters are
	// capabilities.DefaultParameters with it applied
	// (Hub.ResetParameters), at start before any SA and on every reload.
	OffloadUpdate capabilities.Parameters

	// mtuAt is "FILE:LINE" of the `mtu` line: its limit depends on
	// `frame-size`, which may come later, so it is checked once the
	// whole file is read.
	mtuAt string
}

// LoadConfig reads a daemon configuration file:
//
//	# comment (also after a line)
//	link IFNAME [mode auto|native|generic]
//	tun NAME                       (default xdpsec0)
//	address PREFIX                 (an address of the TUN, repeatable)
//	route PREFIX                   (an extra prefix routed into the TUN)
//	mtu N | queues N | frames N
//	frame-size 2048|4096           (bytes per AF_XDP frame; default 2048)
//	pin DIR                        (bpffs directory of the XDP pins)
//	fail-open                      (leave XDP pinned on stop)
//	tun-offload on|off             (TUN vnet_hdr GSO/GRO; default on)
//	control PATH                   (control socket)
//	keys FILE                      (SA lines kept in a separate file)
//	offload PARAM=VALUE ...        (offload parameters, as `xdpsec caps set`
//	                                takes them; repeatable, a later one wins)
//	ip xfrm state add ...          (an SA, `ip xfrm state` syntax)
//	ip xfrm policy add ...         (a policy, `ip xfrm policy` syntax)
//
// A file that holds SA lines (keys) must not be readable by group or others:
// the error says "chmod 600 FILE" (ErrKeyFileMode). No file read may be
// writable by group or others (ErrConfigWritable, "chmod go-w FILE").
// Errors name the file and line, and never show key bytes.
func LoadConfig(path string) (*FileConfig, error) {
	fc := &FileConfig{}
	if err := fc.load(path, false); err != nil {
		return nil, err
	}
	if len(fc.Links) == 0 {
		return nil, fmt.Errorf("%s: no `link IFNAME` line: name the interface xdpsec terminates IPsec on", path)
	}
	if fc.MTU > TUNMTULimit(fc.FrameSize) {
		return nil, fmt.Errorf("%s: `mtu %d`: %s", fc.mtuAt, fc.MTU, mtuAdvice(fc.FrameSize))
	}
	return fc, nil
}

func (fc *FileConfig) load(path string, keysOnly bool) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%w: %s has mode %04o: chmod go-w %s", ErrConfigWritable, path, st.Mode().Perm(), path)
	}
	fc.Files = append(fc.Files, path)
	hasKeys := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for lineNo := 1; sc.Scan(); lineNo++ {
		words, err := sad.Tokenize(sc.Text())
		if err != nil {
			return fmt.Errorf("%s:%d: %w", path, lineNo, err)
		}
		if len(words) == 0 {
			continue
		}
		isSA, err := fc.line(path, words, keysOnly)
		if err != nil {
			return fmt.Errorf("%s:%d: %w", path, lineNo, err)
		}
		if words[0] == "mtu" {
			fc.mtuAt = fmt.Sprintf("%s:%d", path, lineNo)
		}
		hasKeys = hasKeys || isSA
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if hasKeys || keysOnly {
		return checkKeyFileMode(path, st)
	}
	return nil
}

// checkKeyFileMode refuses a file holding keys that group or others may
// read, with the one line LoadConfig and ReadSAFile share.
func checkKeyFileMode(path string, st fs.FileInfo) error {
	if st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%w: %s holds keys and has mode %04o: chmod 600 %s", ErrKeyFileMode, path, st.Mode().Perm(), path)
	}
	return nil
}

// offload applies an `offload PARAM=VALUE ...` line: each setting is
// checked on its own, so the error names the one that is wrong.
func (fc *FileConfig) offload(settings []string) error {
	if len(settings) == 0 {
		return errors.New("`offload` takes PARAM=VALUE settings as `xdpsec caps set` does, e.g. `offload IPsecV2=esp` or `offload cbc(des)=on`")
	}
	for _, s := range settings {
		if _, err := capabilities.ParseSettings([]string{s}); err != nil {
			return fmt.Errorf("`offload %s`: %w", s, err)
		}
	}
	all := append(append([]string(nil), fc.Offload...), settings...)
	u, err := capabilities.ParseSettings(all)
	if err != nil {
		return fmt.Errorf("`offload`: %w", err)
	}
	fc.Offload, fc.OffloadUpdate = all, u
	return nil
}

// SALine is one SA read by ReadSAFile or ReadSALines: where it was, its
// words as written (keys included: they go to the daemon, never to a
// log), and the SA parsed from them.
type SALine struct {
	// Source is "NAME:LINE", for errors about this SA.
	Source string
	Words  []string
	Spec   *sad.SASpec
}

// ReadSAFile reads SA lines from path, as `xdpsec sa add --file` does. The
// file holds keys, so it must not be readable by group or others: such a
// file is refused before it is read (ErrKeyFileMode, "chmod 600 FILE"),
// as a config's key file is. See ReadSALines for the format.
func ReadSAFile(path string) ([]SALine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read SA file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read SA file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("read SA file %s: not a regular file (give a chmod 600 file, or pipe the SAs into `-`)", path)
	}
	if err := checkKeyFileMode(path, st); err != nil {
		return nil, err
	}
	return ReadSALines(f, path)
}

// ReadSALines reads SAs, one per line, from r (name is used in errors):
// each line is an SA in `ip xfrm state add` syntax, with or without the
// leading `ip xfrm state add|update` (so a config's key file is valid
// input). Blank lines and # comments are skipped; a policy or any other
// line is an error. Every line is parsed before any is returned, and the
// first bad one stops the read with "NAME:LINE: message" (never key bytes).
// Reading no SA at all is an error too: an empty pipe is a mistake.
func ReadSALines(r io.Reader, name string) ([]SALine, error) {
	var out []SALine
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		src := fmt.Sprintf("%s:%d", name, lineNo)
		words, err := sad.Tokenize(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
		}
		if len(words) == 0 {
			continue
		}
		if words[0] == "ip" && len(words) >= 3 && !strings.HasPrefix("state", words[2]) {
			return nil, fmt.Errorf("%s: %q: only SAs (`ip xfrm state add ...` or the SPEC alone) are read here; add policies with `xdpsec policy add`", src, strings.Join(words[:3], " "))
		}
		s, err := sad.ParseSA(words)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
		}
		out = append(out, SALine{Source: src, Words: words, Spec: s})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s after line %d: %w", name, lineNo, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no SA found (want one `ip xfrm state add ...` or SPEC per line)", name)
	}
	return out, nil
}

// line applies one tokenized line; it reports whether the line was an SA.
func (fc *FileConfig) line(path string, w []string, keysOnly bool) (bool, error) {
	if w[0] == "ip" {
		if len(w) < 3 || (w[1] != "xfrm" && w[1] != "x") {
			return false, fmt.Errorf("%q: expected `ip xfrm state add ...` or `ip xfrm policy add ...`", strings.Join(w[:min(len(w), 3)], " "))
		}
		switch {
		case strings.HasPrefix("state", w[2]):
			s, err := sad.ParseSA(w)
			if err != nil {
				return false, err
			}
			fc.SAs = append(fc.SAs, s)
			return true, nil
		case strings.HasPrefix("policy", w[2]) && !keysOnly:
			p, err := sad.ParsePolicy(w)
			if err != nil {
				return false, err
			}
			fc.Policies = append(fc.Policies, p)
			return false, nil
		}
		return false, fmt.Errorf("%q: expected state or policy after `ip xfrm`", w[2])
	}
	if keysOnly {
		return false, fmt.Errorf("%q: a key file holds only `ip xfrm state add ...` lines and comments", w[0])
	}
	arg := func(what string) (string, error) {
		if len(w) != 2 {
			return "", fmt.Errorf("`%s` takes one %s", w[0], what)
		}
		return w[1], nil
	}
	num := func(lo, hi int) (int, error) {
		s, err := arg("number")
		if err != nil {
			return 0, err
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < lo || n > hi {
			return 0, fmt.Errorf("`%s %s`: want a number from %d to %d", w[0], s, lo, hi)
		}
		return n, nil
	}
	prefix := func() (netip.Prefix, error) {
		s, err := arg("prefix (ADDRESS/BITS)")
		if err != nil {
			return netip.Prefix{}, err
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("`%s %s`: want ADDRESS/BITS such as 198.51.100.1/32 or 2001:db8::1/128", w[0], s)
		}
		return p, nil
	}
	var err error
	switch w[0] {
	case "link":
		if len(w) != 2 && !(len(w) == 4 && w[2] == "mode") {
			return false, fmt.Errorf("`link` takes IFNAME [mode auto|native|generic]")
		}
		if len(w) == 4 {
			m, err := loader.ParseMode(w[3])
			if err != nil {
				return false, err
			}
			if len(fc.Links) > 0 && m != fc.XDPMode {
				return false, fmt.Errorf("`link %s mode %s`: every link uses the same mode", w[1], w[3])
			}
			fc.XDPMode = m
		}
		fc.Links = append(fc.Links, w[1])
	case "tun":
		fc.TUN, err = arg("interface name")
		if err == nil && (len(fc.TUN) > 15 || strings.ContainsAny(fc.TUN, "/ ")) {
			err = fmt.Errorf("`tun %s`: an interface name has at most 15 characters and no / or blank", fc.TUN)
		}
	case "address":
		var p netip.Prefix
		if p, err = prefix(); err == nil {
			fc.Addrs = append(fc.Addrs, p)
		}
	case "route":
		var p netip.Prefix
		if p, err = prefix(); err == nil {
			fc.Routes = append(fc.Routes, p.Masked())
		}
	case "mtu":
		// The upper limit follows `frame-size`, which may come later:
		// LoadConfig checks it once the whole file is read.
		if fc.MTU, err = num(68, 65535); err != nil {
			err = fmt.Errorf("`%s`: want a number from 68 to %d, or to %d with `frame-size 4096`; or leave mtu out to derive it from the links", strings.Join(w, " "), MaxTUNMTU, TUNMTULimit(4096))
		}
	case "frame-size":
		var v string
		if v, err = arg("size in bytes (2048 or 4096)"); err == nil {
			if fc.FrameSize, err = strconv.Atoi(v); err != nil || (fc.FrameSize != 2048 && fc.FrameSize != 4096) {
				fc.FrameSize = 0
				err = fmt.Errorf("`frame-size %s`: want 2048 or 4096 (bytes per AF_XDP frame; 4096 carries TUN MTUs up to %d and inbound IP packets up to %d)", v, TUNMTULimit(4096), RxFrameLimit(4096)-ethLen-2*4)
			}
		}
	case "queues":
		fc.Queues, err = num(1, 256)
	case "frames":
		fc.FrameCount, err = num(64, 1<<20)
	case "pin":
		fc.PinRoot, err = arg("directory")
	case "fail-open":
		if len(w) != 1 {
			err = fmt.Errorf("`fail-open` takes no argument")
		}
		fc.FailOpen = true
	case "tun-offload":
		var v string
		if v, err = arg("on or off"); err == nil {
			switch v {
			case "on":
				fc.NoTUNOffload = false
			case "off":
				fc.NoTUNOffload = true
			default:
				err = fmt.Errorf("`tun-offload %s`: expected on or off", v)
			}
		}
	case "control":
		fc.Control, err = arg("socket path")
	case "offload":
		err = fc.offload(w[1:])
	case "keys":
		var kf string
		if kf, err = arg("file"); err == nil {
			if !filepath.IsAbs(kf) {
				kf = filepath.Join(filepath.Dir(path), kf)
			}
			err = fc.load(kf, true)
		}
	default:
		err = fmt.Errorf("unknown line %q: expected link, tun, address, route, mtu, queues, frames, frame-size, pin, fail-open, tun-offload, control, keys, offload, `ip xfrm state add ...` or `ip xfrm policy add ...`", w[0])
	}
	return false, err
}
