package config

import (
	"strings"
	"testing"
)

func TestOpsSettings(t *testing.T) {
	c, _, err := Parse("xmppd", []string{"--http", "127.0.0.1:5280", "--metrics", "127.0.0.1:9105", "--admins", "boss, chief@localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Ops.HTTPTLS || c.Ops.HTTP != "127.0.0.1:5280" || c.Ops.Metrics != "127.0.0.1:9105" {
		t.Fatalf("%+v", c.Ops)
	}
	if got := c.AdminList(); len(got) != 2 || got[0] != "boss" || got[1] != "chief@localhost" {
		t.Fatalf("admins %q", got)
	}
	for args, want := range map[string]string{
		"--http nocolon":                                 `http "nocolon": want host:port`,
		"--metrics :9105 --http :9105":                   "give metrics its own address",
		"--admins mallory@elsewhere.example":             `"mallory@elsewhere.example" is not an account of domain localhost`,
		"--admins @localhost":                            "is not an account",
		"--http 127.0.0.1:0 --http-tls=false --admins x": "",
	} {
		_, _, err := Parse("xmppd", strings.Fields(args))
		if want == "" {
			if err != nil {
				t.Errorf("%s: %v", args, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", args, err, want)
		}
	}
}
