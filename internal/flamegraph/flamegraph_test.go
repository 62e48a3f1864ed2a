package flamegraph

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// perfScript is `perf script` output in perf 6.1's format (cpu-clock, a
// Go binary, a kernel frame and unnamed frames).
const perfScript = `# a comment perf may print
xdpsec 4242/4243 [001]  3247.938252:    1001001 cpu-clock:pppH: 
	ffffffff81a0b1c2 do_syscall_64+0x5c ([kernel.kallsyms])
	          4a5b6c github.com/xdpsec/xdpsec/userspace/ipsec.(*Transform).DecryptParsedWith+0x120 (/tmp/xdpsec)
	          4a0000 main.main+0x10 (/tmp/xdpsec)
	          401000 runtime.goexit+0x1 (/tmp/xdpsec)

xdpsec 4242/4243 [001]  3247.939249:    1001001 cpu-clock:pppH: 
	ffffffff81a0b1c2 do_syscall_64+0x60 ([kernel.kallsyms])
	          4a5b6c github.com/xdpsec/xdpsec/userspace/ipsec.(*Transform).DecryptParsedWith+0x124 (/tmp/xdpsec)
	          4a0000 main.main+0x14 (/tmp/xdpsec)
	          401000 runtime.goexit+0x1 (/tmp/xdpsec)

swapper     0 [000]  3247.940249:    1001001 cpu-clock:pppH: 
	            6fb5 [unknown] (/usr/bin/dash)
	    55f69d9caaa0 [unknown] ([unknown])
`

func TestFoldPerfScript(t *testing.T) {
	st, err := FoldPerfScript(strings.NewReader(perfScript))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	WriteFolded(&b, st)
	want := "swapper;[unknown];[dash] 1\n" +
		"xdpsec;runtime.goexit;main.main;github.com/xdpsec/xdpsec/userspace/ipsec.(*Transform).DecryptParsedWith;do_syscall_64 2\n"
	if b.String() != want {
		t.Errorf("folded:\n%s\nwant:\n%s", b.String(), want)
	}
	top := TopSelf(st, 5)
	if len(top) != 2 || top[0].Name != "do_syscall_64" || top[0].Samples != 2 || math.Abs(top[0].Percent-200.0/3) > 1e-9 {
		t.Errorf("top = %+v", top)
	}
	if _, err := FoldPerfScript(strings.NewReader("\tffff frame (x)\n")); !errors.Is(err, ErrFormat) {
		t.Errorf("a frame without a sample: %v", err)
	}
	if _, err := FoldPerfScript(strings.NewReader("")); !errors.Is(err, ErrFormat) {
		t.Errorf("no samples: %v", err)
	}
}

func TestReadFoldedSumsAndRefuses(t *testing.T) {
	st, err := ReadFolded(strings.NewReader("a;b 3\n\na;b 2\nc 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[0].Count != 5 || st[1].Count != 1 {
		t.Errorf("stacks = %+v", st)
	}
	for _, bad := range []string{"a;b\n", "a;b x\n", "a;b -1\n"} {
		if _, err := ReadFolded(strings.NewReader(bad)); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("ReadFolded(%q) = %v", bad, err)
		}
	}
}

// svgFrame is one drawn frame as the SVG holds it.
type svgFrame struct {
	title   string
	x, y, w float64
	samples int
}

// parseSVG decodes the whole document with encoding/xml (so it must be
// well-formed) and returns the frames.
func parseSVG(t *testing.T, doc []byte) []svgFrame {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(doc))
	var frames []svgFrame
	var title string
	inTitle := false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG not well-formed: %v", err)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			switch e.Name.Local {
			case "title":
				inTitle, title = true, ""
			case "rect":
				f := svgFrame{title: title}
				for _, a := range e.Attr {
					v, _ := strconv.ParseFloat(a.Value, 64)
					switch a.Name.Local {
					case "x":
						f.x = v
					case "y":
						f.y = v
					case "width":
						f.w = v
					case "data-samples":
						f.samples = int(v)
					}
				}
				if f.samples > 0 {
					frames = append(frames, f)
				}
			}
		case xml.CharData:
			if inTitle {
				title += string(e)
			}
		case xml.EndElement:
			if e.Name.Local == "title" {
				inTitle = false
			}
		}
	}
	return frames
}

func TestSVGWidthsAreProportional(t *testing.T) {
	// 8 samples: all=8, a=4 (b=3, c<&>=1), d=4 (e=4).
	folded := "a;b 3\na;c<&> 1\nd;e 4\n"
	st, err := ReadFolded(strings.NewReader(folded))
	if err != nil {
		t.Fatal(err)
	}
	var doc bytes.Buffer
	if err := WriteSVG(&doc, st, SVGOptions{Title: `t<"&">`, Width: 1000}); err != nil {
		t.Fatal(err)
	}
	frames := parseSVG(t, doc.Bytes())
	byName := map[string]svgFrame{}
	for _, f := range frames {
		name, _, _ := strings.Cut(f.title, " (")
		byName[name] = f
	}
	if len(frames) != 6 {
		t.Fatalf("%d frames, want 6 (all a b c<&> d e): %+v", len(frames), frames)
	}
	unit := byName["all"].w / 8
	if math.Abs(byName["all"].w-(1000-2*padX)) > 0.01 {
		t.Errorf("root width %v, want the full width %v", byName["all"].w, 1000-2*padX)
	}
	for name, samples := range map[string]float64{"a": 4, "b": 3, "c<&>": 1, "d": 4, "e": 4} {
		f, ok := byName[name]
		if !ok {
			t.Errorf("no frame %q", name)
			continue
		}
		if math.Abs(f.w-samples*unit) > 0.01 || f.samples != int(samples) {
			t.Errorf("%s: width %v (%d samples), want %v (%v)", name, f.w, f.samples, samples*unit, samples)
		}
	}
	// Children sit on their parent, side by side, starting at its left.
	if byName["b"].x != byName["a"].x || math.Abs(byName["c<&>"].x-(byName["a"].x+3*unit)) > 0.01 ||
		byName["b"].y >= byName["a"].y || byName["a"].y >= byName["all"].y {
		t.Errorf("layout: %+v", byName)
	}
	if !strings.Contains(byName["b"].title, "3 samples, 37.50%") {
		t.Errorf("title %q", byName["b"].title)
	}
}

// TestRealPerfScript folds what perf itself writes, when perf can record
// here (root, perf installed).
func TestRealPerfScript(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: perf record")
	}
	if _, err := exec.LookPath("perf"); err != nil {
		t.Skip("needs perf (apt-get install linux-perf)")
	}
	data := filepath.Join(t.TempDir(), "perf.data")
	if out, err := exec.Command("perf", "record", "-q", "-g", "-F", "999", "-o", data, "--",
		"/bin/sh", "-c", "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done").CombinedOutput(); err != nil {
		t.Skipf("perf record does not work here: %v: %s", err, out)
	}
	out, err := exec.Command("perf", "script", "-i", data).Output()
	if err != nil {
		t.Fatalf("perf script: %v", err)
	}
	st, err := FoldPerfScript(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, s := range st {
		n += s.Count
		if s.Frames[0] != "sh" {
			t.Errorf("stack rooted at %q, want the comm sh", s.Frames[0])
		}
	}
	if want := uint64(strings.Count(string(out), "cpu-clock") + strings.Count(string(out), "cycles")); n != want || n == 0 {
		t.Errorf("folded %d samples, perf script printed %d", n, want)
	}
	var doc bytes.Buffer
	if err := WriteSVG(&doc, st, SVGOptions{}); err != nil {
		t.Fatal(err)
	}
	parseSVG(t, doc.Bytes())
}
