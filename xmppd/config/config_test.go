package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseFileAndFlags(t *testing.T) {
	f := filepath.Join(t.TempDir(), "x.yaml")
	os.WriteFile(f, []byte("domain: example.org\nc2s_shaper: 5000\nc2s-tls: \"\"\nkeepalive: 2s\nallow-registration: false\ndata: /tmp/d\n"), 0o600)
	c, _, err := Parse("xmppd", []string{"--config", f, "--domain", "flag.org"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Domain != "flag.org" || c.C2SShaper != 5000 || c.C2STLS != "" || c.Keepalive != 2*time.Second || c.AllowRegistration {
		t.Fatalf("%+v", c)
	}
	if c.AdminSocket != "/tmp/d/admin.sock" {
		t.Fatal(c.AdminSocket)
	}
	os.WriteFile(f, []byte("bogus: 1\n"), 0o600)
	if _, _, err := Parse("xmppd", []string{"--config", f}); err == nil {
		t.Fatal("unknown key accepted")
	}
	if _, _, err := Parse("xmppd", []string{"--cert", "x"}); err == nil {
		t.Fatal("cert without key accepted")
	}
	d, _, err := Parse("xmppd", nil)
	if err != nil || d.Domain != "localhost" || d.C2S != "127.0.0.1:5222" || d.C2STLS != "127.0.0.1:5223" || !d.AllowRegistration || d.MaxStanza != 262144 {
		t.Fatalf("%+v %v", d, err)
	}
}

func TestClusterSettings(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	os.WriteFile(key, []byte("0123456789abcdef0123\n"), 0o600)
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("tooshort\n"), 0o600)
	f := filepath.Join(dir, "x.yaml")
	os.WriteFile(f, []byte("node_name: n1\ncluster-addr: 127.0.0.1:7400\njoin: 127.0.0.2:7400, 127.0.0.3:7400\ncluster-key-file: "+key+
		"\nstorage: file:/tmp/x.img?size=1048576\non-storage-loss: read-only\nraft-heartbeat-timeout: 200ms\n"), 0o600)
	c, _, err := Parse("xmppd", []string{"--config", f})
	if err != nil {
		t.Fatal(err)
	}
	if c.Node != "n1" || !c.Clustered() || len(c.JoinList()) != 2 || c.JoinList()[1] != "127.0.0.3:7400" ||
		c.StorageKind() != "file" || c.OnStorageLoss != "read-only" || c.RaftHeartbeatTimeout != 200*time.Millisecond || !c.LeaveOnStop {
		t.Fatalf("%+v", c)
	}
	if k, err := c.LoadClusterKey(); err != nil || string(k) != "0123456789abcdef0123" {
		t.Fatalf("key %q %v", k, err)
	}
	d, _, err := Parse("xmppd", nil)
	if err != nil || d.Storage != "dir" || d.Clustered() || d.OnStorageLoss != "ram" || d.Node == "" {
		t.Fatalf("defaults: %+v %v", d, err)
	}
	w, _, err := Parse("xmppd", []string{"--witness", "--c2s", "", "--c2s-tls", "", "--cluster-addr", "127.0.0.1:7400", "--cluster-key", "0123456789abcdef"})
	if err != nil || !w.Witness {
		t.Fatalf("witness without listeners: %v", err)
	}
	bad := map[string][]string{
		"no cluster key":        {"--cluster-addr", "127.0.0.1:7400"},
		"need at least 16":      {"--cluster-addr", "127.0.0.1:7400", "--cluster-key-file", short},
		"no such file":          {"--cluster-addr", "127.0.0.1:7400", "--cluster-key-file", filepath.Join(dir, "missing")},
		"both set":              {"--cluster-addr", "127.0.0.1:7400", "--cluster-key-file", key, "--cluster-key", "0123456789abcdef"},
		"without cluster-addr":  {"--join", "127.0.0.1:7400"},
		"fixed port":            {"--cluster-addr", "127.0.0.1:0", "--cluster-key-file", key},
		"advertise-addr":        {"--cluster-addr", "0.0.0.0:7400", "--cluster-key-file", key},
		"want host:port":        {"--cluster-addr", "127.0.0.1:7400", "--cluster-key-file", key, "--join", "nohost"},
		"want dir, file:":       {"--storage", "nfs://x"},
		"bad size":              {"--storage", "file:/x?size=big"},
		"target and LUN":        {"--storage", "iscsi://10.0.0.1/iqn.2020-01.x:t"},
		"not a number":          {"--storage", "iscsi://u:s3cret@10.0.0.1/iqn.2020-01.x:t/zero"},
		"want ram or read-only": {"--on-storage-loss", "panic"},
		"node-name":             {"--node-name", "a#b"},
	}
	for want, args := range bad {
		_, _, err := Parse("xmppd", args)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: error %v, want it to contain %q", args, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error shows the CHAP secret: %v", err)
		}
	}
}

func TestMemoryPolicy(t *testing.T) {
	d, _, err := Parse("xmppd", nil)
	if err != nil || d.GCPercent != 0 || d.MemoryLimitMiB != 0 || d.GCMinHeapMiB != 128 || d.ReleaseMemoryAfter != time.Second {
		t.Fatalf("defaults: %+v %v", d, err)
	}
	c, _, err := Parse("xmppd", []string{"--gc-percent", "50", "--memory-limit-mib", "512", "--gc-min-heap-mib", "0", "--release-memory-after", "0"})
	if err != nil || c.GCPercent != 50 || c.MemoryLimitMiB != 512 || c.GCMinHeapMiB != 0 || c.ReleaseMemoryAfter != 0 {
		t.Fatalf("%+v %v", c, err)
	}
	for _, args := range [][]string{{"--gc-percent", "-2"}, {"--gc-percent", "-1"}, {"--memory-limit-mib", "-1"}, {"--gc-min-heap-mib", "-1"}, {"--release-memory-after", "-1s"}} {
		if _, _, err := Parse("xmppd", args); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	if _, _, err := Parse("xmppd", []string{"--gc-percent", "-1", "--memory-limit-mib", "256"}); err != nil {
		t.Errorf("GC off with a limit refused: %v", err)
	}
}
