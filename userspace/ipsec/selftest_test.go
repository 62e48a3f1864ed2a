package ipsec

import "testing"

func TestSelfTestEveryAlgorithm(t *testing.T) {
	for _, a := range Algorithms {
		if err := SelfTest(a.Name); err != nil {
			t.Errorf("%s: %v", a.Name, err)
		}
	}
	if err := SelfTest("cbc(nope)"); err == nil {
		t.Error("unknown algorithm passed its self-test")
	}
}
