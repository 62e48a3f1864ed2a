package capabilities

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/xdpsec/xdpsec/userspace/ipsec"
)

// Setting names ParseSettings accepts besides algorithm names. They are the
// NDIS_OFFLOAD_PARAMETERS member names, so `caps set` reads like the OID.
const (
	SettingIPsecV1     = "IPsecV1"
	SettingIPsecV2     = "IPsecV2"
	SettingIPsecV2IPv4 = "IPsecV2IPv4"
	SettingUdpEsp      = "UdpEsp"
)

// Registry keywords ParseSettings accepts for the three IPsec parameters,
// as an NDIS driver's INF names them. Their numbers are the OID values
// minus one: 0 disabled, 1 AH, 2 ESP, 3 AH and ESP.
const (
	KeywordIPsecOffloadV1IPv4 = "*IPsecOffloadV1IPv4"
	KeywordIPsecOffloadV2     = "*IPsecOffloadV2"
	KeywordIPsecOffloadV2IPv4 = "*IPsecOffloadV2IPv4"
)

// keywordParameter maps a registry keyword (lower case) to its parameter.
var keywordParameter = map[string]string{
	strings.ToLower(KeywordIPsecOffloadV1IPv4): SettingIPsecV1,
	strings.ToLower(KeywordIPsecOffloadV2):     SettingIPsecV2,
	strings.ToLower(KeywordIPsecOffloadV2IPv4): SettingIPsecV2IPv4,
}

// fromKeyword rewrites a registry keyword setting as its parameter: a
// number is the registry's (0-3) and becomes the OID's (1-4); a word
// (esp, ah-esp, an NDIS name) means what it means for the parameter.
func fromKeyword(name, value string) (string, string, error) {
	param, ok := keywordParameter[strings.ToLower(name)]
	if !ok {
		return name, value, nil
	}
	if n, err := strconv.Atoi(value); err == nil {
		if n < 0 || n > 3 {
			return "", "", fmt.Errorf("setting %s=%s: registry values are 0 disabled, 1 AH, 2 ESP, 3 AH and ESP (the OID's minus one): %w", name, value, ErrBadParameter)
		}
		return param, strconv.Itoa(n + 1), nil
	}
	return param, value, nil
}

// ParseSettings reads `caps set` arguments, each PARAM=VALUE, into an
// update for Parameters.Update / Hub.SetParameters:
//
//	IPsecV1=VALUE, IPsecV2=VALUE, IPsecV2IPv4=VALUE  (ParseIPsecParameter:
//	    disabled, ah, esp, ah-esp, no-change, 0-4 or an NDIS name)
//	*IPsecOffloadV1IPv4, *IPsecOffloadV2, *IPsecOffloadV2IPv4=VALUE  (the
//	    registry keywords of the three above: numbers 0-3 as the registry
//	    counts them, one less than the OID; words as above)
//	UdpEsp=on|off|no-change
//	XFRM-NAME=on|off|no-change  (an algorithm of ipsec.Algorithms, e.g.
//	    cbc(des)=on, rfc7539esp(chacha20,poly1305)=off)
//
// Parameter names are matched case-insensitively. A later setting of the
// same parameter wins. Errors wrap ErrBadParameter and say what is allowed.
func ParseSettings(args []string) (Parameters, error) {
	var u Parameters
	if len(args) == 0 {
		return u, fmt.Errorf("no setting given: want PARAM=VALUE, e.g. IPsecV2=esp or cbc(des)=on: %w", ErrBadParameter)
	}
	for _, arg := range args {
		name, value, ok := strings.Cut(arg, "=")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if !ok || name == "" || value == "" {
			return Parameters{}, fmt.Errorf("setting %q: want PARAM=VALUE, e.g. IPsecV2=esp or cbc(des)=on: %w", arg, ErrBadParameter)
		}
		name, value, err := fromKeyword(name, value)
		if err != nil {
			return Parameters{}, err
		}
		switch strings.ToLower(name) {
		case strings.ToLower(SettingIPsecV1), strings.ToLower(SettingIPsecV2), strings.ToLower(SettingIPsecV2IPv4):
			v, err := ParseIPsecParameter(value)
			if err != nil {
				return Parameters{}, fmt.Errorf("setting %s: %w: %w", name, err, ErrBadParameter)
			}
			switch strings.ToLower(name) {
			case strings.ToLower(SettingIPsecV1):
				u.IPsecV1 = IPsecV1Parameter(v)
			case strings.ToLower(SettingIPsecV2):
				u.IPsecV2 = IPsecV2Parameter(v)
			default:
				u.IPsecV2IPv4 = IPsecV2Parameter(v)
			}
		case strings.ToLower(SettingUdpEsp):
			s, err := parseSwitch(value)
			if err != nil {
				return Parameters{}, fmt.Errorf("setting %s: %w", name, err)
			}
			u.UdpEsp = s
		default:
			if algorithm(name) == nil {
				return Parameters{}, fmt.Errorf("setting %q: unknown parameter (want IPsecV1, IPsecV2, IPsecV2IPv4, UdpEsp, a registry keyword *IPsecOffloadV1IPv4, *IPsecOffloadV2 or *IPsecOffloadV2IPv4, or an algorithm: %s): %w",
					name, strings.Join(algorithmNames(), ", "), ErrBadParameter)
			}
			s, err := parseSwitch(value)
			if err != nil {
				return Parameters{}, fmt.Errorf("setting %s: %w", name, err)
			}
			if u.Algorithms == nil {
				u.Algorithms = map[string]Switch{}
			}
			u.Algorithms[name] = s
		}
	}
	return u, nil
}

func parseSwitch(s string) (Switch, error) {
	switch strings.ToLower(s) {
	case "on", "1", "true", "enabled":
		return SwitchOn, nil
	case "off", "2", "false", "disabled":
		return SwitchOff, nil
	case "no-change", "0":
		return SwitchNoChange, nil
	}
	return 0, fmt.Errorf("value %q: want on, off or no-change: %w", s, ErrBadParameter)
}

// ParseReason returns the Reason named s, as Reason.String spells it.
func ParseReason(s string) (Reason, error) {
	for r, n := range reasonNames {
		if n == s {
			return r, nil
		}
	}
	return 0, fmt.Errorf("unknown change reason %q", s)
}

// UnmarshalText reads the name MarshalText writes.
func (r *Reason) UnmarshalText(b []byte) error {
	v, err := ParseReason(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

func algorithmNames() []string {
	var all []string
	for _, a := range ipsec.Algorithms {
		all = append(all, a.Name)
	}
	return all
}

// ParameterChanges lists how to from differs from to, as the settings
// (ParseSettings syntax) that turn from into to, in a stable order:
// IPsecV1, IPsecV2, IPsecV2IPv4, UdpEsp, then algorithms by name. The
// daemon logs them when a config reload changes its parameters.
func ParameterChanges(from, to Parameters) []string {
	short := [...]string{"no-change", "disabled", "ah", "esp", "ah-esp"}
	word := func(v uint8) string {
		if int(v) < len(short) {
			return short[v]
		}
		return fmt.Sprint(v)
	}
	var out []string
	if from.IPsecV1 != to.IPsecV1 {
		out = append(out, SettingIPsecV1+"="+word(uint8(to.IPsecV1)))
	}
	if from.IPsecV2 != to.IPsecV2 {
		out = append(out, SettingIPsecV2+"="+word(uint8(to.IPsecV2)))
	}
	if from.IPsecV2IPv4 != to.IPsecV2IPv4 {
		out = append(out, SettingIPsecV2IPv4+"="+word(uint8(to.IPsecV2IPv4)))
	}
	if from.UdpEsp != to.UdpEsp {
		out = append(out, SettingUdpEsp+"="+to.UdpEsp.String())
	}
	for _, name := range algorithmNames() {
		if from.Algorithms[name] != to.Algorithms[name] {
			out = append(out, name+"="+to.Algorithms[name].String())
		}
	}
	return out
}
