package tlscert

import (
	"crypto/tls"
	"os"
	"testing"
)

func TestEnsureSelfSignedKept(t *testing.T) {
	d := t.TempDir()
	c, k, created, err := EnsureSelfSigned(d, "localhost")
	if err != nil || !created {
		t.Fatal(err, created)
	}
	if st, _ := os.Stat(k); st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", st.Mode())
	}
	b1, _ := os.ReadFile(c)
	_, _, created, err = EnsureSelfSigned(d, "localhost")
	b2, _ := os.ReadFile(c)
	if err != nil || created || string(b1) != string(b2) {
		t.Fatal("certificate not kept")
	}
	cfg, err := Config(c, k)
	if err != nil || cfg.MinVersion != tls.VersionTLS12 {
		t.Fatal(err)
	}
}
