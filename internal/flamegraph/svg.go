package flamegraph

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"hash/fnv"
	"io"
	"sort"
	"strings"
)

// node is one frame of the merged call tree.
type node struct {
	name     string
	count    uint64 // samples through this frame
	children map[string]*node
}

func (n *node) child(name string) *node {
	if c, ok := n.children[name]; ok {
		return c
	}
	if n.children == nil {
		n.children = map[string]*node{}
	}
	c := &node{name: name}
	n.children[name] = c
	return c
}

func (n *node) sorted() []*node {
	out := make([]*node, 0, len(n.children))
	for _, c := range n.children {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// SVGOptions size and label the graph; zero fields take the defaults.
type SVGOptions struct {
	Title       string  // "Flame Graph"
	Width       float64 // 1200 px
	FrameHeight float64 // 16 px
	// MinWidth hides frames narrower than this (px); 0.1 by default, so
	// that huge profiles stay small.
	MinWidth float64
}

const (
	padX      = 10.0
	padTop    = 40.0
	padBottom = 20.0
	fontSize  = 12.0
	charWidth = 0.59 * fontSize
)

// WriteSVG renders stacks as a flame graph: the root at the bottom, each
// frame as wide as its share of the samples, a <title> per frame (name,
// samples, percent) for the tooltip. The SVG is self-contained (no script,
// no external reference).
func WriteSVG(w io.Writer, stacks []Stack, opts SVGOptions) error {
	if opts.Title == "" {
		opts.Title = "Flame Graph"
	}
	if opts.Width == 0 {
		opts.Width = 1200
	}
	if opts.FrameHeight == 0 {
		opts.FrameHeight = 16
	}
	if opts.MinWidth == 0 {
		opts.MinWidth = 0.1
	}
	root := &node{name: "all"}
	depth := 0
	for _, s := range stacks {
		root.count += s.Count
		n := root
		for _, f := range s.Frames {
			n = n.child(f)
			n.count += s.Count
		}
		depth = max(depth, len(s.Frames))
	}
	if root.count == 0 {
		return fmt.Errorf("%w: no samples to draw", ErrFormat)
	}
	height := padTop + padBottom + float64(depth+1)*opts.FrameHeight
	scale := (opts.Width - 2*padX) / float64(root.count)

	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, `<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" xmlns="http://www.w3.org/2000/svg">
<rect x="0" y="0" width="100%%" height="100%%" fill="#f8f8f0"/>
<text x="%.1f" y="24" font-family="Verdana" font-size="17" text-anchor="middle">%s</text>
<g font-family="Verdana" font-size="%.0f">
`, opts.Width, height, opts.Width, height, opts.Width/2, esc(opts.Title), fontSize)
	var draw func(n *node, x float64, level int)
	draw = func(n *node, x float64, level int) {
		wpx := float64(n.count) * scale
		if wpx < opts.MinWidth {
			return
		}
		y := height - padBottom - float64(level+1)*opts.FrameHeight
		pct := 100 * float64(n.count) / float64(root.count)
		fmt.Fprintf(bw, `<g><title>%s (%d samples, %.2f%%)</title><rect x="%.2f" y="%.1f" width="%.2f" height="%.1f" fill="%s" rx="2" ry="2" data-samples="%d"/>`,
			esc(n.name), n.count, pct, x, y, wpx, opts.FrameHeight-1, color(n.name), n.count)
		if chars := int((wpx - 6) / charWidth); chars >= 3 {
			label := n.name
			if len(label) > chars {
				label = label[:chars-2] + ".."
			}
			fmt.Fprintf(bw, `<text x="%.2f" y="%.1f">%s</text>`, x+3, y+opts.FrameHeight-4, esc(label))
		}
		bw.WriteString("</g>\n")
		cx := x
		for _, c := range n.sorted() {
			draw(c, cx, level+1)
			cx += float64(c.count) * scale
		}
	}
	draw(root, padX, 0)
	bw.WriteString("</g>\n</svg>\n")
	return bw.Flush()
}

func esc(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// color picks a warm colour from the name's hash (stable across runs);
// kernel frames (no package dot, or [kernel.kallsyms]) lean orange, Go and
// user frames red-yellow, as the classic palette does.
func color(name string) string {
	h := fnv.New32a()
	h.Write([]byte(name))
	v := h.Sum32()
	r := 205 + v%50
	g := 80 + (v>>8)%130
	b := 40 + (v>>16)%50
	if !strings.Contains(name, ".") || strings.HasPrefix(name, "[") {
		g = 120 + (v>>8)%90
		b = 0 + (v>>16)%40
	}
	return fmt.Sprintf("rgb(%d,%d,%d)", r, g, b)
}

// Self is one function's samples where it was the leaf (its own time).
type Self struct {
	Name    string
	Samples uint64
	Percent float64
}

// TopSelf returns the n functions with the most samples as the leaf frame,
// most first (ties by name).
func TopSelf(stacks []Stack, n int) []Self {
	self := map[string]uint64{}
	var total uint64
	for _, s := range stacks {
		if len(s.Frames) == 0 {
			continue
		}
		self[s.Frames[len(s.Frames)-1]] += s.Count
		total += s.Count
	}
	out := make([]Self, 0, len(self))
	for k, v := range self {
		out = append(out, Self{Name: k, Samples: v, Percent: 100 * float64(v) / float64(max(total, 1))})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Samples != out[j].Samples {
			return out[i].Samples > out[j].Samples
		}
		return out[i].Name < out[j].Name
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}
