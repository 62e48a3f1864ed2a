package sad

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// SpecFile is what ParseSpecFile read: SAs and policies in file order.
type SpecFile struct {
	SAs      []*SASpec
	Policies []*PolicySpec
}

// ParseSpecFile reads SAs and policies, one per line, from r (name is
// used in errors). A line is
//
//	[ip xfrm state add|update] SA-WORDS          an SA (ParseSA)
//	ip xfrm policy add|update POLICY-WORDS       a policy (ParsePolicy)
//	policy POLICY-WORDS                          a policy
//
// Blank lines and # comments are ignored; a line ending in \ continues on
// the next. Words are split as Tokenize does. The first bad line stops
// the parse with "NAME:LINE: message" (wrapping ErrSyntax); keys never
// appear in it.
func ParseSpecFile(r io.Reader, name string) (*SpecFile, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	f := &SpecFile{}
	var pending strings.Builder
	start, lineNo := 0, 0
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if pending.Len() == 0 {
			start = lineNo
		}
		if strings.HasSuffix(line, `\`) && !strings.HasSuffix(line, `\\`) {
			pending.WriteString(strings.TrimSuffix(line, `\`))
			pending.WriteByte(' ')
			continue
		}
		pending.WriteString(line)
		full := pending.String()
		pending.Reset()
		if err := f.addLine(full); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, start, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s:%d: %w", name, lineNo+1, err)
	}
	if pending.Len() > 0 {
		if err := f.addLine(pending.String()); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, start, err)
		}
	}
	return f, nil
}

func (f *SpecFile) addLine(line string) error {
	words, err := Tokenize(line)
	if err != nil || len(words) == 0 {
		return err
	}
	isPolicy := words[0] == "policy"
	if isPolicy {
		words = words[1:]
	} else if len(words) >= 3 && words[0] == "ip" && strings.HasPrefix("xfrm", words[1]) && words[2] != "" &&
		strings.HasPrefix("policy", words[2]) {
		isPolicy = true
	}
	if isPolicy {
		p, err := ParsePolicy(words)
		if err != nil {
			return err
		}
		f.Policies = append(f.Policies, p)
		return nil
	}
	s, err := ParseSA(words)
	if err != nil {
		return err
	}
	f.SAs = append(f.SAs, s)
	return nil
}
