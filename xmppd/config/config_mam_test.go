package config

import "testing"

func TestMAMSettings(t *testing.T) {
	c, _, err := Parse("xmppd", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.MAM.Max != 10000 || c.MAM.RAMMax != 1000 {
		t.Fatalf("defaults %+v", c.MAM)
	}
	c, _, err = Parse("xmppd", []string{"--mam-max", "-1", "--mam-ram-max", "500"})
	if err != nil || c.MAM.Max != -1 || c.MAM.RAMMax != 500 {
		t.Fatalf("%+v %v", c.MAM, err)
	}
	if _, _, err := Parse("xmppd", []string{"--mam-max", "0"}); err == nil {
		t.Fatal("mam-max 0 accepted")
	}
}
