package capabilities

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func renderState() State {
	st := State{Hardware: fullHardware(), Parameters: DefaultParameters(), Linux: Linux{
		EngineRunning: true, XDPMode: XDPNative, AFXDPMode: AFXDPCopy, Queues: 2, MaxReplayWindow: 4096,
		Link:     &LinkInfo{Name: "xe0", Index: 3, MTU: 1500, Up: true, OperState: "up", RxQueues: 2, QueueSource: "sysfs", NativeXDP: Check{Supported: true}},
		SelfTest: map[string]string{"rfc4106(gcm(aes))": ""},
	}}
	st.Parameters, _ = st.Parameters.Update(Parameters{IPsecV2: NDIS_OFFLOAD_PARAMETERS_IPSECV2_ESP_ENABLED})
	return st
}

func TestRenderJSONShape(t *testing.T) {
	var buf bytes.Buffer
	if err := Render(&buf, renderState(), ViewAll, FormatJSON); err != nil {
		t.Fatal(err)
	}
	var doc map[string]map[string]json.RawMessage
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, buf.String())
	}
	for _, k := range []string{"hardware", "parameters", "current"} {
		if doc[k] == nil {
			t.Fatalf("no %q key", k)
		}
	}
	for _, k := range []string{"v1", "v2", "linux"} {
		if doc["hardware"][k] == nil || doc["current"][k] == nil {
			t.Fatalf("view lacks %q", k)
		}
	}
	var hw struct {
		V1 struct {
			IPv4AH struct{ Md5, Sha_1 *int }
		} `json:"v1"`
		V2 struct {
			IPv6Supported            *bool
			AuthenticationAlgorithms struct {
				Value uint32   `json:"value"`
				Flags []string `json:"flags"`
			}
		} `json:"v2"`
		Linux struct {
			BeyondNDIS []string        `json:"beyondNdis"`
			Ethtool    map[string]bool `json:"ethtool"`
			Link       *LinkInfo       `json:"link"`
			Kernel     *KernelInfo     `json:"kernel"`
		} `json:"linux"`
	}
	raw, _ := json.Marshal(doc["hardware"])
	if err := json.Unmarshal(raw, &hw); err != nil {
		t.Fatal(err)
	}
	if hw.V1.IPv4AH.Md5 == nil || *hw.V1.IPv4AH.Md5 != 1 || hw.V2.IPv6Supported == nil || !*hw.V2.IPv6Supported {
		t.Errorf("NDIS member keys missing: %s", raw)
	}
	if hw.V2.AuthenticationAlgorithms.Value != 0x3f || len(hw.V2.AuthenticationAlgorithms.Flags) != 6 ||
		hw.V2.AuthenticationAlgorithms.Flags[0] != "IPSEC_OFFLOAD_V2_AUTHENTICATION_MD5" {
		t.Errorf("AuthenticationAlgorithms = %+v", hw.V2.AuthenticationAlgorithms)
	}
	if len(hw.Linux.BeyondNDIS) != 4 || !hw.Linux.Ethtool["esp-hw-offload"] || hw.Linux.Link == nil || hw.Linux.Kernel == nil {
		t.Errorf("linux extension: %+v", hw.Linux)
	}
	if !strings.Contains(compact(doc["parameters"]["IPsecV2"]), `"name":"NDIS_OFFLOAD_PARAMETERS_IPSECV2_ESP_ENABLED"`) {
		t.Errorf("parameters: %s", doc["parameters"]["IPsecV2"])
	}
	if !strings.Contains(compact(doc["current"]["v2"]), `"Ah":false`) || !strings.Contains(compact(doc["current"]["linux"]), `"xdpConfig"`) {
		t.Errorf("current: %s", doc["current"]["v2"])
	}
	// --view: only that view's key.
	buf.Reset()
	if err := Render(&buf, renderState(), ViewCurrent, FormatJSON); err != nil {
		t.Fatal(err)
	}
	var only map[string]json.RawMessage
	if err := json.Unmarshal(buf.Bytes(), &only); err != nil || len(only) != 1 || only["current"] == nil {
		t.Errorf("--view current gave keys %v (%v)", only, err)
	}
}

func TestRenderHex(t *testing.T) {
	st := renderState()
	for _, c := range []struct {
		f      Format
		digits int
	}{{FormatNDISV1, 56}, {FormatNDISV2, 64}} {
		var buf bytes.Buffer
		if err := Render(&buf, st, ViewCurrent, c.f); err != nil {
			t.Fatal(err)
		}
		h := strings.TrimSuffix(buf.String(), "\n")
		if len(h) != c.digits {
			t.Fatalf("%s: %d hex digits", c.f, len(h))
		}
		b, _ := hex.DecodeString(h)
		if c.f == FormatNDISV2 {
			var v IPsecOffloadV2
			if err := v.UnmarshalBinary(b); err != nil || v != st.Current().V2() {
				t.Errorf("V2 hex does not decode to the current view: %v %+v", err, v)
			}
		} else {
			var v IPsecOffloadV1
			if err := v.UnmarshalBinary(b); err != nil || v != st.Current().V1() {
				t.Errorf("V1 hex does not decode to the current view: %v %+v", err, v)
			}
		}
	}
	if err := Render(&bytes.Buffer{}, st, ViewAll, FormatNDISV2); !errors.Is(err, ErrRender) || !strings.Contains(err.Error(), "--view hardware or --view current") {
		t.Errorf("hex of all views: %v", err)
	}
	if _, err := ParseFormat("ndis-v3"); !errors.Is(err, ErrRender) {
		t.Errorf("ParseFormat: %v", err)
	}
	if _, err := ParseView("hw"); !errors.Is(err, ErrRender) {
		t.Errorf("ParseView: %v", err)
	}
}

func TestRenderTable(t *testing.T) {
	var buf bytes.Buffer
	if err := Render(&buf, renderState(), ViewAll, FormatTable); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"NDIS_IPSEC_OFFLOAD_V2", "NDIS_IPSEC_OFFLOAD_V1", "Supported.Encapsulation", "IPv4AH.Sha_1", "IPv4ESP.TripleDes",
		"AuthenticationAlgorithms", "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_256", "NDIS_OFFLOAD_PARAMETERS_IPSECV2_ESP_ENABLED",
		"rfc7539esp(chacha20,poly1305)", "cbc(des) (insecure)", "esp-hw-offload", "xfrm offload type", "native XDP",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q", want)
		}
	}
	if testing.Verbose() {
		t.Log("\n" + out)
	}
}

func compact(b []byte) string {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return string(b)
	}
	return out.String()
}
