package capabilities

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
)

// layoutCase sets one member alone and gives the expected bytes, written by
// hand from the offsets in reference §1.1/§2.1 (not computed by the code
// under test).
type layoutCase struct {
	kind  string // v1 or v2
	path  string // NDIS member path
	value uint32
	hex   string
}

func z(n int) string { return strings.Repeat("00", n) }

var v1Golden = []layoutCase{
	{"v1", "Supported.Encapsulation", 0x2, "02000000" + z(24)},
	{"v1", "Supported.AhEspCombined", 1, z(4) + "01000000" + z(20)},
	{"v1", "Supported.TransportTunnelCombined", 1, z(8) + "01000000" + z(16)},
	{"v1", "Supported.IPv4Options", 1, z(12) + "01000000" + z(12)},
	{"v1", "Supported.Flags", 0x80, z(16) + "80000000" + z(8)},
	{"v1", "IPv4AH.Md5", 1, z(20) + "01000000" + z(4)},
	{"v1", "IPv4AH.Sha_1", 1, z(20) + "04000000" + z(4)},
	{"v1", "IPv4AH.Transport", 1, z(20) + "10000000" + z(4)},
	{"v1", "IPv4AH.Tunnel", 1, z(20) + "40000000" + z(4)},
	{"v1", "IPv4AH.Send", 1, z(20) + "00010000" + z(4)},
	{"v1", "IPv4AH.Receive", 3, z(20) + "000c0000" + z(4)},
	{"v1", "IPv4ESP.Des", 1, z(24) + "01000000"},
	{"v1", "IPv4ESP.Reserved", 1, z(24) + "04000000"},
	{"v1", "IPv4ESP.TripleDes", 1, z(24) + "10000000"},
	{"v1", "IPv4ESP.NullEsp", 1, z(24) + "40000000"},
	{"v1", "IPv4ESP.Transport", 1, z(24) + "00010000"},
	{"v1", "IPv4ESP.Tunnel", 1, z(24) + "00040000"},
	{"v1", "IPv4ESP.Send", 1, z(24) + "00100000"},
	{"v1", "IPv4ESP.Receive", 3, z(24) + "00c00000"},
}

var v2Golden = []layoutCase{
	{"v2", "Encapsulation", 0x6, "06000000" + z(28)},
	{"v2", "IPv6Supported", 1, z(4) + "01" + z(27)},
	{"v2", "IPv4Options", 1, z(5) + "01" + z(26)},
	{"v2", "IPv6NonIPsecExtensionHeaders", 1, z(6) + "01" + z(25)},
	{"v2", "Ah", 1, z(7) + "01" + z(24)},
	{"v2", "Esp", 1, z(8) + "01" + z(23)},
	{"v2", "AhEspCombined", 1, z(9) + "01" + z(22)},
	{"v2", "Transport", 1, z(10) + "01" + z(21)},
	{"v2", "Tunnel", 1, z(11) + "01" + z(20)},
	{"v2", "TransportTunnelCombined", 1, z(12) + "01" + z(19)},
	{"v2", "LsoSupported", 1, z(13) + "01" + z(18)},
	{"v2", "ExtendedSequenceNumbers", 1, z(14) + "01" + z(17)},
	{"v2", "UdpEsp", 0x8, z(16) + "08000000" + z(12)},
	{"v2", "AuthenticationAlgorithms", 0x20, z(20) + "20000000" + z(8)},
	{"v2", "EncryptionAlgorithms", 0x100, z(24) + "00010000" + z(4)},
	{"v2", "SaOffloadCapacity", 0x01020304, z(28) + "04030201"},
}

// setMember sets the member at path (NDIS names = Go field names) of v.
func setMember(t *testing.T, v any, path string, value uint32) {
	t.Helper()
	rv := reflect.ValueOf(v).Elem()
	for _, p := range strings.Split(path, ".") {
		rv = rv.FieldByName(p)
		if !rv.IsValid() {
			t.Fatalf("no member %s", path)
		}
	}
	switch rv.Kind() {
	case reflect.Bool:
		rv.SetBool(value != 0)
	default:
		rv.SetUint(uint64(value))
	}
}

func encodeCase(t *testing.T, c layoutCase) ([]byte, any) {
	t.Helper()
	if c.kind == "v1" {
		var v IPsecOffloadV1
		setMember(t, &v, c.path, c.value)
		b, err := v.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b, v
	}
	var v IPsecOffloadV2
	setMember(t, &v, c.path, c.value)
	b, err := v.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b, v
}

func TestLayoutGoldenPerField(t *testing.T) {
	for _, c := range append(append([]layoutCase{}, v1Golden...), v2Golden...) {
		t.Run(c.kind+"/"+c.path, func(t *testing.T) {
			b, v := encodeCase(t, c)
			if got := hex.EncodeToString(b); got != c.hex {
				t.Fatalf("encode %s=%#x:\n got %s\nwant %s", c.path, c.value, got, c.hex)
			}
			// Decode the golden bytes and compare with the value set.
			want, _ := hex.DecodeString(c.hex)
			if c.kind == "v1" {
				var d IPsecOffloadV1
				if err := d.UnmarshalBinary(want); err != nil {
					t.Fatal(err)
				}
				if d != v.(IPsecOffloadV1) {
					t.Fatalf("decode: got %+v want %+v", d, v)
				}
			} else {
				var d IPsecOffloadV2
				if err := d.UnmarshalBinary(want); err != nil {
					t.Fatal(err)
				}
				if d != v.(IPsecOffloadV2) {
					t.Fatalf("decode: got %+v want %+v", d, v)
				}
			}
		})
	}
}

// TestLayoutAgainstCtypes has Python's ctypes, given the C declarations of
// ntddndis.h, lay out every golden case: an independent judge of the bit
// positions and offsets.
func TestLayoutAgainstCtypes(t *testing.T) {
	const py = "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Skip("needs /usr/bin/python3 (Debian's) for the ctypes judge")
	}
	cases := append(append([]layoutCase{}, v1Golden...), v2Golden...)
	var in bytes.Buffer
	for _, c := range cases {
		fmt.Fprintf(&in, "%s %s %d\n", c.kind, c.path, c.value)
	}
	cmd := exec.Command(py, "testdata/ndis_layout.py")
	cmd.Stdin = &in
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ctypes judge: %v\n%s", err, out)
	}
	lines := strings.Fields(string(out))
	if len(lines) != len(cases) {
		t.Fatalf("ctypes judge gave %d lines for %d cases:\n%s", len(lines), len(cases), out)
	}
	for i, c := range cases {
		b, _ := encodeCase(t, c)
		if got := hex.EncodeToString(b); got != lines[i] {
			t.Errorf("%s %s: xdpsec %s, ctypes %s", c.kind, c.path, got, lines[i])
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	var v1 IPsecOffloadV1
	var v2 IPsecOffloadV2
	bad := []struct {
		name string
		err  error
		want string
	}{
		{"v1 short", v1.UnmarshalBinary(make([]byte, 27)), "27 bytes, want 28"},
		{"v1 AH high bits", v1.UnmarshalBinary(mustHex(z(20) + "00100000" + z(4))), "IPv4AH: bits 12-31"},
		{"v1 ESP high bits", v1.UnmarshalBinary(mustHex(z(24) + "00000100")), "IPv4ESP: bits 16-31"},
		{"v2 long", v2.UnmarshalBinary(make([]byte, 33)), "33 bytes, want 32"},
		{"v2 boolean 2", v2.UnmarshalBinary(mustHex(z(8) + "02" + z(23))), "Esp (offset 8)"},
		{"v2 padding", v2.UnmarshalBinary(mustHex(z(15) + "ff" + z(16))), "padding byte 15"},
	}
	for _, b := range bad {
		if !errors.Is(b.err, ErrLayout) || !strings.Contains(b.err.Error(), b.want) {
			t.Errorf("%s: got %v, want ErrLayout mentioning %q", b.name, b.err, b.want)
		}
	}
	if v1 != (IPsecOffloadV1{}) || v2 != (IPsecOffloadV2{}) {
		t.Errorf("a failed decode changed its target: %+v %+v", v1, v2)
	}
	over := IPsecOffloadV1{IPv4AH: IPsecOffloadV1AH{Send: 4}}
	if _, err := over.MarshalBinary(); !errors.Is(err, ErrLayout) {
		t.Errorf("2-bit field holding 4 encoded: %v", err)
	}
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func TestMaskJSON(t *testing.T) {
	v := IPsecOffloadV2{
		Encapsulation:            NDIS_ENCAPSULATION_IEEE_802_3,
		UdpEsp:                   IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT | IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TUNNEL,
		AuthenticationAlgorithms: IPSEC_OFFLOAD_V2_AUTHENTICATION_SHA_256 | 0x400,
		EncryptionAlgorithms:     IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_128,
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"Encapsulation":{"value":2,"flags":["NDIS_ENCAPSULATION_IEEE_802_3"]}`,
		`"UdpEsp":{"value":3,"flags":["IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT","IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TUNNEL"]}`,
		`"AuthenticationAlgorithms":{"value":1028,"flags":["IPSEC_OFFLOAD_V2_AUTHENTICATION_SHA_256","0x00000400"]}`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s:\n%s", want, b)
		}
	}
	var back IPsecOffloadV2
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back != v {
		t.Fatalf("JSON round trip: %+v != %+v", back, v)
	}
	var e EncryptionV2
	if err := json.Unmarshal([]byte(`{"value":8,"flags":["IPSEC_OFFLOAD_V2_ENCRYPTION_NONE"]}`), &e); err == nil {
		t.Fatal("contradicting flags accepted")
	}
	var zero UdpEspV2
	if got := zero.Flags(); len(got) != 1 || got[0] != "IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_NONE" {
		t.Errorf("zero UdpEsp flags = %v", got)
	}
}

func TestUdpEspV1FromV2(t *testing.T) {
	pairs := map[UdpEspV2]UdpEspV1{
		IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT:             IPSEC_TPT_UDPESP_ENCAPTYPE_OTHER,
		IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TUNNEL:                IPSEC_TUN_UDPESP_ENCAPTYPE_OTHER,
		IPSEC_OFFLOAD_V2_TRANSPORT_OVER_UDP_ESP_ENCAPSULATION_TUNNEL: IPSEC_TPTOVERTUN_UDPESP_ENCAPTYPE_OTHER,
		IPSEC_OFFLOAD_V2_UDP_ESP_ENCAPSULATION_TRANSPORT_OVER_TUNNEL: IPSEC_TPT_UDPESP_OVER_PURE_TUN_ENCAPTYPE_OTHER,
	}
	for v2, v1 := range pairs {
		if got := v2.V1(); got != v1 {
			t.Errorf("%v.V1() = %v, want %v", v2.Flags(), got.Flags(), v1.Flags())
		}
	}
}

func FuzzDecodeV1(f *testing.F) {
	for _, c := range v1Golden {
		f.Add(mustHex(c.hex))
	}
	f.Add(make([]byte, 5))
	f.Fuzz(func(t *testing.T, b []byte) {
		var v IPsecOffloadV1
		if err := v.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrLayout) {
				t.Fatalf("error does not wrap ErrLayout: %v", err)
			}
			return
		}
		out, err := v.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded value does not encode: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("encode(decode(b)) != b:\n%x\n%x", out, b)
		}
	})
}

func FuzzDecodeV2(f *testing.F) {
	for _, c := range v2Golden {
		f.Add(mustHex(c.hex))
	}
	f.Add(make([]byte, 31))
	f.Fuzz(func(t *testing.T, b []byte) {
		var v IPsecOffloadV2
		if err := v.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrLayout) {
				t.Fatalf("error does not wrap ErrLayout: %v", err)
			}
			return
		}
		out, _ := v.MarshalBinary()
		if !bytes.Equal(out, b) {
			t.Fatalf("encode(decode(b)) != b:\n%x\n%x", out, b)
		}
		var again IPsecOffloadV2
		if err := again.UnmarshalBinary(out); err != nil || again != v {
			t.Fatalf("decode(encode(x)) != x: %v %+v %+v", err, again, v)
		}
	})
}
