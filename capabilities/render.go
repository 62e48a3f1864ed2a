package capabilities

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

// View selects which of the three views Render shows.
type View string

// Views. ViewAll shows hardware, parameters and current.
const (
	ViewAll        View = "all"
	ViewHardware   View = "hardware"
	ViewParameters View = "parameters"
	ViewCurrent    View = "current"
)

// Format selects how Render writes.
type Format string

// Formats. The NDIS formats write the binary layout of one view as hex
// (V1: 56 hex digits, V2: 64) and a newline.
const (
	FormatTable  Format = "table"
	FormatJSON   Format = "json"
	FormatNDISV1 Format = "ndis-v1"
	FormatNDISV2 Format = "ndis-v2"
)

// ErrRender is wrapped by Render and the parsers for a view or format that
// does not exist or does not fit together.
var ErrRender = errors.New("cannot render")

// ParseView reads a --view argument ("" means all).
func ParseView(s string) (View, error) {
	switch v := View(s); v {
	case "":
		return ViewAll, nil
	case ViewAll, ViewHardware, ViewParameters, ViewCurrent:
		return v, nil
	}
	return "", fmt.Errorf("view %q: want hardware, parameters, current or all: %w", s, ErrRender)
}

// ParseFormat reads a --format argument ("" means table).
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case "":
		return FormatTable, nil
	case FormatTable, FormatJSON, FormatNDISV1, FormatNDISV2:
		return f, nil
	}
	return "", fmt.Errorf("format %q: want table, json, ndis-v1 or ndis-v2: %w", s, ErrRender)
}

// Render writes the state's view in format to w. It is the one place that
// prints capabilities: the CLI, the watch stream and the control socket
// all call it. The NDIS hex formats need view hardware or current.
func Render(w io.Writer, s State, view View, format Format) error {
	if view == "" {
		view = ViewAll
	}
	if _, err := ParseView(string(view)); err != nil {
		return err
	}
	switch format {
	case FormatJSON:
		return renderJSON(w, s, view)
	case FormatNDISV1, FormatNDISV2:
		return renderHex(w, s, view, format)
	case FormatTable, "":
		return renderTable(w, s, view)
	}
	_, err := ParseFormat(string(format))
	return err
}

func renderHex(w io.Writer, s State, view View, format Format) error {
	var o Offload
	switch view {
	case ViewHardware:
		o = s.Hardware
	case ViewCurrent:
		o = s.Current()
	default:
		return fmt.Errorf("format %s shows one view of capabilities: add --view hardware or --view current: %w", format, ErrRender)
	}
	var b []byte
	var err error
	if format == FormatNDISV1 {
		b, err = o.V1().MarshalBinary()
	} else {
		b, err = o.V2().MarshalBinary()
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, hex.EncodeToString(b))
	return err
}

// algorithmJSON describes one algorithm in the Linux extension.
type algorithmJSON struct {
	Name string `json:"name"`
	// NDIS lists the V2 constants that stand for it; empty when NDIS
	// cannot name it.
	NDIS     []string `json:"ndis"`
	Insecure bool     `json:"insecure,omitempty"`
	// Accelerated: the CPU has the instructions this algorithm's Go
	// implementation uses (AES-NI / PCLMULQDQ for AES and GHASH).
	Accelerated bool `json:"accelerated"`
}

type xfrmJSON struct {
	Type  string `json:"type"`
	Value uint8  `json:"value"`
}

// linuxViewJSON is the view-dependent part of the Linux extension.
type linuxViewJSON struct {
	Algorithms  []algorithmJSON `json:"algorithms"`
	BeyondNDIS  []string        `json:"beyondNdis"`
	Families    map[string]bool `json:"families"`
	Send        bool            `json:"send"`
	Receive     bool            `json:"receive"`
	Ethtool     map[string]bool `json:"ethtool"`
	XFRMOffload xfrmJSON        `json:"xfrmOffload"`
	XDPConfig   *XDPConfig      `json:"xdpConfig,omitempty"`
}

type hardwareLinuxJSON struct {
	linuxViewJSON
	Linux
}

type viewJSON struct {
	V1    IPsecOffloadV1 `json:"v1"`
	V2    IPsecOffloadV2 `json:"v2"`
	Linux any            `json:"linux"`
}

type paramJSON struct {
	Value uint8  `json:"value"`
	Name  string `json:"name"`
}

type parametersJSON struct {
	IPsecV1     paramJSON         `json:"IPsecV1"`
	IPsecV2     paramJSON         `json:"IPsecV2"`
	IPsecV2IPv4 paramJSON         `json:"IPsecV2IPv4"`
	UdpEsp      string            `json:"UdpEsp"`
	Algorithms  map[string]string `json:"Algorithms"`
}

func accelerated(name string, c CPUInfo) bool {
	switch name {
	case "rfc4106(gcm(aes))", "rfc4543(gcm(aes))":
		return c.AES && c.PCLMULQDQ
	case "cbc(aes)", "rfc3686(ctr(aes))":
		return c.AES
	}
	return false
}

func linuxView(o Offload, c CPUInfo, withXDP bool) linuxViewJSON {
	lv := linuxViewJSON{
		Algorithms:  []algorithmJSON{},
		BeyondNDIS:  o.BeyondNDIS(),
		Families:    map[string]bool{"IPv4": o.Active() && o.IPv4, "IPv6": o.Active() && o.IPv6},
		Send:        o.Active() && o.Send,
		Receive:     o.Active() && o.Receive,
		Ethtool:     o.EthtoolFeatures(),
		XFRMOffload: xfrmJSON{Type: o.XFRMOffload().String(), Value: uint8(o.XFRMOffload())},
	}
	if lv.BeyondNDIS == nil {
		lv.BeyondNDIS = []string{}
	}
	for _, n := range o.Algorithms {
		a := algorithm(n)
		names := NDISNames(n)
		if names == nil {
			names = []string{}
		}
		lv.Algorithms = append(lv.Algorithms, algorithmJSON{Name: n, NDIS: names, Insecure: a != nil && a.Insecure, Accelerated: accelerated(n, c)})
	}
	if withXDP {
		x := o.XDPConfig()
		lv.XDPConfig = &x
	}
	return lv
}

func parametersView(p Parameters) parametersJSON {
	out := parametersJSON{
		IPsecV1:     paramJSON{uint8(p.IPsecV1), p.IPsecV1.String()},
		IPsecV2:     paramJSON{uint8(p.IPsecV2), p.IPsecV2.String()},
		IPsecV2IPv4: paramJSON{uint8(p.IPsecV2IPv4), p.IPsecV2IPv4.String()},
		UdpEsp:      p.UdpEsp.String(),
		Algorithms:  map[string]string{},
	}
	for n, s := range p.Algorithms {
		out.Algorithms[n] = s.String()
	}
	return out
}

// JSONDocument returns the document Render writes for FormatJSON, for
// callers that embed it (the control socket's change stream):
// {"hardware":{"v1","v2","linux"},"parameters":{...},"current":{"v1","v2","linux"}},
// only the selected view's key unless view is ViewAll.
func JSONDocument(s State, view View) map[string]any {
	doc := map[string]any{}
	if view == ViewAll || view == ViewHardware || view == "" {
		lx := s.Linux.Clone()
		if lx.SelfTest == nil {
			lx.SelfTest = map[string]string{}
		}
		if lx.Limits == nil {
			lx.Limits = []string{}
		}
		doc["hardware"] = viewJSON{V1: s.Hardware.V1(), V2: s.Hardware.V2(),
			Linux: hardwareLinuxJSON{linuxView(s.Hardware, s.Linux.CPU, false), lx}}
	}
	if view == ViewAll || view == ViewParameters || view == "" {
		doc["parameters"] = parametersView(s.Parameters)
	}
	if view == ViewAll || view == ViewCurrent || view == "" {
		cur := s.Current()
		doc["current"] = viewJSON{V1: cur.V1(), V2: cur.V2(), Linux: linuxView(cur, s.Linux.CPU, true)}
	}
	return doc
}

func renderJSON(w io.Writer, s State, view View) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(JSONDocument(s, view))
}

// column is one view shown in the table.
type column struct {
	name string
	o    Offload
}

func boolText(b bool) string {
	if b {
		return "TRUE"
	}
	return "FALSE"
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "-"
}

// row writes one tab-separated line.
func row(tw io.Writer, cells ...string) {
	if len(cells) == 0 {
		// A line without cells ends the column block: each section
		// aligns on its own.
		fmt.Fprintln(tw)
		return
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
}

// memberRows walks an NDIS struct by reflection so the table shows every
// member under its NDIS name, in declaration order, with bitmask members
// expanded into one line per NDIS constant set in any column.
func memberRows(tw io.Writer, prefix string, vals []reflect.Value) {
	t := vals[0].Type()
	for i := range t.NumField() {
		f := t.Field(i)
		fields := make([]reflect.Value, len(vals))
		for j, v := range vals {
			fields[j] = v.Field(i)
		}
		name := prefix + f.Name
		if f.Type.Kind() == reflect.Struct {
			memberRows(tw, name+".", fields)
			continue
		}
		cells := []string{name}
		type flagger interface{ Flags() []string }
		var flagSets [][]string
		for _, fv := range fields {
			switch fv.Kind() {
			case reflect.Bool:
				cells = append(cells, boolText(fv.Bool()))
			default:
				if fl, ok := fv.Interface().(flagger); ok {
					cells = append(cells, fmt.Sprintf("0x%08x", fv.Uint()))
					flagSets = append(flagSets, fl.Flags())
				} else {
					cells = append(cells, fmt.Sprint(fv.Uint()))
				}
			}
		}
		row(tw, cells...)
		var union []string
		for _, fs := range flagSets {
			for _, n := range fs {
				if !slices.Contains(union, n) {
					union = append(union, n)
				}
			}
		}
		for _, n := range union {
			c := []string{"  " + n}
			for _, fs := range flagSets {
				c = append(c, yes(slices.Contains(fs, n)))
			}
			row(tw, c...)
		}
	}
}

func renderTable(w io.Writer, s State, view View) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	var cols []column
	if view == ViewAll || view == ViewHardware {
		cols = append(cols, column{"hardware", s.Hardware})
	}
	if view == ViewAll || view == ViewCurrent {
		cols = append(cols, column{"current", s.Current()})
	}
	header := func(title string) {
		c := []string{title}
		for _, col := range cols {
			c = append(c, col.name)
		}
		row(tw, c...)
	}
	if len(cols) > 0 {
		header("NDIS_IPSEC_OFFLOAD_V2")
		var v2 []reflect.Value
		for _, c := range cols {
			v2 = append(v2, reflect.ValueOf(c.o.V2()))
		}
		memberRows(tw, "", v2)
		row(tw)
		header("NDIS_IPSEC_OFFLOAD_V1")
		var v1 []reflect.Value
		for _, c := range cols {
			v1 = append(v1, reflect.ValueOf(c.o.V1()))
		}
		memberRows(tw, "", v1)
		row(tw)
		header("Linux extension")
		lines := []struct {
			name string
			f    func(o Offload) string
		}{
			{"families", func(o Offload) string {
				var f []string
				if o.Active() && o.IPv4 {
					f = append(f, "IPv4")
				}
				if o.Active() && o.IPv6 {
					f = append(f, "IPv6")
				}
				return orNone(strings.Join(f, ","))
			}},
			{"send/receive", func(o Offload) string {
				return yes(o.Active() && o.Send) + "/" + yes(o.Active() && o.Receive)
			}},
			{"xfrm offload type", func(o Offload) string { return o.XFRMOffload().String() }},
			{"esp-hw-offload", func(o Offload) string { return onOff(o.EthtoolFeatures()["esp-hw-offload"]) }},
			{"esp-tx-csum-hw-offload", func(o Offload) string { return onOff(o.EthtoolFeatures()["esp-tx-csum-hw-offload"]) }},
			{"tx-esp-segmentation", func(o Offload) string { return onOff(o.EthtoolFeatures()["tx-esp-segmentation"]) }},
			{"beyond NDIS", func(o Offload) string { return orNone(strings.Join(o.BeyondNDIS(), ",")) }},
		}
		for _, l := range lines {
			c := []string{l.name}
			for _, col := range cols {
				c = append(c, l.f(col.o))
			}
			row(tw, c...)
		}
		if view == ViewAll || view == ViewCurrent {
			x := s.Current().XDPConfig()
			c := []string{"xdp steering (current)"}
			for range cols {
				c = append(c, fmt.Sprintf("esp=%s ah=%s udp-esp=%s ipv4=%s ipv6=%s", onOff(x.ESP), onOff(x.AH), onOff(x.UDPESP), onOff(x.IPv4), onOff(x.IPv6)))
				break
			}
			row(tw, c...)
		}
		row(tw)
	}
	if view == ViewAll || view == ViewParameters {
		p := s.Parameters
		row(tw, "NDIS_OFFLOAD_PARAMETERS", "value")
		row(tw, "IPsecV1", fmt.Sprintf("%d %s", p.IPsecV1, p.IPsecV1))
		row(tw, "IPsecV2", fmt.Sprintf("%d %s", p.IPsecV2, p.IPsecV2))
		row(tw, "IPsecV2IPv4", fmt.Sprintf("%d %s", p.IPsecV2IPv4, p.IPsecV2IPv4))
		row(tw, "UdpEsp (xdpsec)", p.UdpEsp.String())
		row(tw)
	}
	// Algorithms: one line each, with the column the operator needs most:
	// why an algorithm is missing.
	if len(cols) > 0 || view == ViewParameters {
		row(tw, "algorithm", "NDIS", "self-test", "parameter", "current", "accelerated")
		cur := s.Current()
		for _, a := range ipsec.Algorithms {
			st, tested := s.Linux.SelfTest[a.Name]
			test := "not run"
			if tested {
				test = "pass"
				if st != "" {
					test = "FAIL: " + st
				}
			}
			name := a.Name
			if a.Insecure {
				name += " (insecure)"
			}
			row(tw, name, orNone(strings.Join(shortNDIS(NDISNames(a.Name)), ",")), test,
				s.Parameters.Algorithms[a.Name].String(), yes(cur.HasAlgorithm(a.Name)), yes(accelerated(a.Name, s.Linux.CPU)))
		}
		row(tw)
	}
	if view == ViewAll || view == ViewHardware {
		lx := s.Linux
		row(tw, "machine and link", "")
		if l := lx.Link; l != nil {
			row(tw, "link", fmt.Sprintf("%s (index %d) mtu %d %s, oper %s, %d rx queues (%s)", l.Name, l.Index, l.MTU, upDown(l.Up), l.OperState, l.RxQueues, l.QueueSource))
			row(tw, "native XDP", checkText(l.NativeXDP))
			if l.AttachedXDP != XDPNone {
				row(tw, "XDP attached now", string(l.AttachedXDP))
			}
		}
		if lx.Program != nil {
			row(tw, "XDP program steers", orNone(strings.Join(lx.Program.Shapes(), ",")))
		}
		row(tw, "datapath XDP mode", orNone(string(lx.XDPMode)))
		row(tw, "AF_XDP mode", orNone(string(lx.AFXDPMode)))
		row(tw, "engine", fmt.Sprintf("running=%v queues=%d sas-in-use=%d max-replay-window=%d", lx.EngineRunning, lx.Queues, lx.SAsInUse, lx.MaxReplayWindow))
		row(tw, "kernel XDP / XSKMAP / bpf_link XDP", checkText(lx.Kernel.XDP)+" / "+checkText(lx.Kernel.XSKMap)+" / "+checkText(lx.Kernel.BPFLinkXDP))
		row(tw, "cpu "+lx.CPU.Arch, fmt.Sprintf("aes=%v pclmulqdq=%v", lx.CPU.AES, lx.CPU.PCLMULQDQ))
		for _, l := range lx.Limits {
			row(tw, "limit", l)
		}
	}
	return tw.Flush()
}

func shortNDIS(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		n = strings.TrimPrefix(n, "IPSEC_OFFLOAD_V2_")
		out[i] = n
	}
	return out
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func upDown(b bool) string {
	if b {
		return "up"
	}
	return "down"
}

func checkText(c Check) string {
	if c.Supported {
		if c.Detail != "" {
			return "yes (" + c.Detail + ")"
		}
		return "yes"
	}
	return "no (" + c.Detail + ")"
}
