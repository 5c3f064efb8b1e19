package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseParams(t *testing.T) {
	l := ParseParams("cmdline", `BOOT_IMAGE=/vmlinuz console=ttyS0 xedge.domain=chat.example.org xedge.seeds="10.0.0.1, 10.0.0.2" xedge.debug xedge.bogus=1 quiet`)
	if l.Values[KeyDomain] != "chat.example.org" {
		t.Errorf("domain %q", l.Values[KeyDomain])
	}
	if l.Values[KeySeeds] != "10.0.0.1, 10.0.0.2" {
		t.Errorf("seeds %q", l.Values[KeySeeds])
	}
	if l.Values[KeyDebug] != "1" {
		t.Errorf("bare flag: %q", l.Values[KeyDebug])
	}
	if len(l.Warnings) != 1 || !strings.Contains(l.Warnings[0], "xedge.bogus") {
		t.Errorf("warnings %v", l.Warnings)
	}
}

func TestParseParamsFileSyntax(t *testing.T) {
	l := ParseParams("image", "# site defaults\nxedge.domain=a.example\n\nxedge.registration=1\n")
	if l.Values[KeyDomain] != "a.example" || l.Values[KeyRegistration] != "1" || len(l.Values) != 2 {
		t.Errorf("values %v", l.Values)
	}
}

func TestLayering(t *testing.T) {
	image := ParseParams("image", "xedge.domain=image.example xedge.restarts=5/1h")
	dhcp := FromDHCP("xedge.domain=dhcp.example xedge.key=s3cret-0123456789", "lan.example")
	cmd := ParseParams("cmdline", "xedge.domain=cmd.example")
	c := Merge(Builtin(), image, dhcp, cmd)
	if c.Domain != "cmd.example" || c.Source[KeyDomain] != "cmdline" {
		t.Errorf("domain %q from %q", c.Domain, c.Source[KeyDomain])
	}
	if c.ClusterKey != "s3cret-0123456789" || c.Source[KeyClusterKey] != "dhcp" {
		t.Errorf("key from %q", c.Source[KeyClusterKey])
	}
	if c.MaxRestarts != 5 || c.RestartWindow != time.Hour {
		t.Errorf("restarts %d/%v", c.MaxRestarts, c.RestartWindow)
	}
	if c.Maintenance() {
		t.Errorf("problems %v", c.Problems)
	}
	// without cmdline the DHCP layer wins over the image
	if c := Merge(Builtin(), image, dhcp); c.Domain != "dhcp.example" {
		t.Errorf("dhcp over image: %q", c.Domain)
	}
}

func TestDHCPDomainNameFallback(t *testing.T) {
	if c := Merge(Builtin(), FromDHCP("", "lan.example")); c.Domain != "lan.example" {
		t.Errorf("option 15 fallback: %q", c.Domain)
	}
	if c := Merge(Builtin(), FromDHCP("xedge.domain=x.example", "lan.example")); c.Domain != "x.example" {
		t.Errorf("option 224 over 15: %q", c.Domain)
	}
}

func TestDefaults(t *testing.T) {
	c := Merge(Builtin(), ParseParams("cmdline", "xedge.domain=d.example"))
	if c.MaxRestarts != 3 || c.RestartWindow != 30*time.Minute || c.DHCPTimeout != 10*time.Second || c.Debug || c.Registration {
		t.Errorf("defaults: %+v", c)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "standalone") {
		t.Errorf("warnings %v", c.Warnings)
	}
}

func TestMaintenanceReasons(t *testing.T) {
	cases := []struct {
		params string
		want   []string
	}{
		{"", []string{"no XMPP domain"}},
		{"xedge.domain=d.example xedge.pxe=maybe", []string{"xedge.pxe"}},
		{"xedge.domain=d.example xedge.boot=tftp://x/", []string{"xedge.boot"}},
		{"xedge.domain=d.example xedge.key=short", []string{"at least 16"}},
		{"xedge.domain=bad_domain!", []string{"xedge.domain"}},
		{"xedge.domain=d.example xedge.restarts=lots", []string{"xedge.restarts", "N/DURATION"}},
		{"xedge.domain=d.example xedge.config=ftp://x", []string{"xedge.config"}},
		{"xedge.domain=d.example xedge.debug=maybe", []string{"xedge.debug"}},
		{"xedge.domain=d.example xedge.dhcp_timeout=-1s", []string{"xedge.dhcp_timeout"}},
	}
	for _, tc := range cases {
		c := Merge(Builtin(), ParseParams("cmdline", tc.params))
		if !c.Maintenance() {
			t.Errorf("%q: not in maintenance", tc.params)
			continue
		}
		all := strings.Join(c.Problems, "\n")
		for _, w := range tc.want {
			if !strings.Contains(all, w) {
				t.Errorf("%q: problems %q lack %q", tc.params, all, w)
			}
		}
	}
}

func TestXmppdArgs(t *testing.T) {
	c := Merge(Builtin(), ParseParams("cmdline", "xedge.domain=d.example xedge.registration=1"))
	got := strings.Join(c.XmppdArgs(Runtime{NodeName: "node1", Addr: netip.MustParseAddr("10.0.0.5"), ConfigFile: "/etc/xedge/xmppd.yaml"}), " ")
	want := "--domain d.example --data /var/lib/xmppd --c2s :5222 --c2s-tls :5223 --admin-socket /run/xmppd/admin.sock --log-level info --node-name node1 --allow-registration=true --register allow --config /etc/xedge/xmppd.yaml"
	if got != want {
		t.Errorf("standalone args\n got %s\nwant %s", got, want)
	}
	c = Merge(Builtin(), ParseParams("cmdline", "xedge.domain=d.example xedge.key=0123456789abcdef xedge.seeds=10.0.0.1,10.0.0.2:7500 xedge.storage=iscsi://10.0.0.9/iqn.x/0"))
	if c.Maintenance() {
		t.Fatal(c.Problems)
	}
	got = strings.Join(c.XmppdArgs(Runtime{NodeName: "node2", Addr: netip.MustParseAddr("10.0.0.6")}), " ")
	want = "--domain d.example --data /var/lib/xmppd --c2s :5222 --c2s-tls :5223 --admin-socket /run/xmppd/admin.sock --log-level info --node-name node2 --allow-registration=false --storage iscsi://10.0.0.9/iqn.x/0 --cluster-addr 10.0.0.6:7400 --cluster-key-file /run/xmppd/cluster.key --join 10.0.0.1:7400,10.0.0.2:7500"
	if got != want {
		t.Errorf("clustered args\n got %s\nwant %s", got, want)
	}
}

// A box told to join a cluster (seeds, or booted by an xedge boot server) without a
// key is quarantined, not run standalone; a wrong key reported by xmppd is recognised.
func TestQuarantine(t *testing.T) {
	for _, tc := range []struct{ params, want string }{
		{"xedge.domain=d.example xedge.seeds=10.0.0.1", "no cluster key: xedge.seeds"},
		{"xedge.domain=d.example xedge.boot=http://10.77.0.1/", "the boot server http://10.77.0.1/ gave none"},
	} {
		c := Merge(Builtin(), ParseParams("cmdline", tc.params))
		if !c.Quarantined() || !c.Maintenance() || !strings.Contains(strings.Join(c.Quarantine, "\n"), tc.want) {
			t.Errorf("%s: quarantine %q, want %q", tc.params, c.Quarantine, tc.want)
		}
	}
	c := Merge(Builtin(), ParseParams("cmdline", "xedge.domain=d.example xedge.boot=http://10.77.0.1/ xedge.pxe=on"),
		ParseParams("server", "xedge.key=0123456789abcdef0 xedge.seeds=10.77.0.11"))
	if c.Quarantined() || c.Maintenance() || c.PXE != "proxy" || c.Boot != "http://10.77.0.1/" || c.Source[KeyClusterKey] != "server" {
		t.Fatalf("booted with a key from the server: %+v", c)
	}
	line := `time=x level=WARN msg="join: cannot reach seed (retrying)" seed=10.77.0.11:7400 err="cluster peer 10.77.0.11:7400 refused us or is not a member (wrong cluster key?): remote error: tls: bad certificate"`
	if r := WrongKey(line); !strings.HasPrefix(r, "wrong cluster key: the cluster refused this box's key (join: cannot reach seed (retrying): cluster peer 10.77.0.11:7400 refused us") {
		t.Fatalf("WrongKey: %q", r)
	}
	if r := WrongKey(`xmppd: start storage: storage: cannot join the cluster: cluster peer 10.77.0.11:7400 refused us or is not a member (wrong cluster key?): tls: peer is not a member of this cluster (wrong cluster key?)`); r == "" {
		t.Fatal("WrongKey missed the exit message")
	}
	if r := WrongKey(`msg="join: cannot reach seed (retrying)" err="cluster peer 10.77.0.11:7400 refused us or is not a member (wrong cluster key?): read tcp: connection reset by peer"`); r != "" {
		t.Fatalf("a handshake cut short quarantines a good box: %q", r)
	}
	if r := WrongKey(`level=WARN msg="refused cluster connection: handshake failed (wrong cluster key?)" from=10.77.0.14:5555`); r != "" {
		t.Fatalf("a member's log of a refused intruder quarantines the member: %q", r)
	}
	serf := `time=2026-12-05T21:45:59.059Z level=WARN msg="cannot join gossip seed 10.77.0.11:7401: wrong cluster key: its gossip cannot be decrypted with this node's key (give every node the same --cluster-key-file)" component=discovery seed=10.77.0.11:7401`
	if r := WrongKey(serf); r != "wrong cluster key: the cluster refused this box's key (cannot join gossip seed 10.77.0.11:7401: wrong cluster key: its gossip cannot be decrypted with this node's key (give every node the same --cluster-key-file))" {
		t.Fatalf("WrongKey(gossip): %q", r)
	}
	if WrongKey("level=INFO msg=joined") != "" {
		t.Fatal("WrongKey matched an ordinary line")
	}
}
