package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestFoldSVGTop(t *testing.T) {
	script := "xdpsec 1/2 [000] 1.0: 1 cpu-clock:\n\tffff f2+0x1 (/x)\n\tffff f1+0x1 (/x)\n\n" +
		"xdpsec 1/2 [000] 1.1: 1 cpu-clock:\n\tffff f1+0x1 (/x)\n"
	var out, errb bytes.Buffer
	if code := run([]string{"fold"}, strings.NewReader(script), &out, &errb); code != 0 {
		t.Fatalf("fold: exit %d: %s", code, errb.String())
	}
	if out.String() != "xdpsec;f1 1\nxdpsec;f1;f2 1\n" {
		t.Fatalf("fold = %q", out.String())
	}
	folded := out.String()
	out.Reset()
	if code := run([]string{"svg", "--title", "t"}, strings.NewReader(folded), &out, &errb); code != 0 || !strings.HasSuffix(out.String(), "</svg>\n") {
		t.Fatalf("svg: exit %d: %s %s", code, errb.String(), out.String())
	}
	out.Reset()
	if code := run([]string{"top", "-n", "1"}, strings.NewReader(folded), &out, &errb); code != 0 || !strings.Contains(out.String(), "50.00%  f1") {
		t.Fatalf("top: exit %d: %q", code, out.String())
	}
}

func TestBadInputIsOneLine(t *testing.T) {
	for _, c := range []struct {
		args  []string
		in    string
		code  int
		wants string
	}{
		{[]string{"svg"}, "a;b x\n", 1, "line 1"},
		{[]string{"fold"}, "", 1, "no samples"},
		{[]string{"draw"}, "", 2, "unknown command"},
		{[]string{"svg", "--width", "5"}, "", 2, "too narrow"},
		{[]string{"top", "/nonexistent/x.folded"}, "", 1, "no such file"},
	} {
		var out, errb bytes.Buffer
		code := run(c.args, strings.NewReader(c.in), &out, &errb)
		if code != c.code || strings.Count(errb.String(), "\n") != 1 || !strings.Contains(errb.String(), c.wants) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", c.args, code, errb.String(), c.code, c.wants)
		}
	}
}
