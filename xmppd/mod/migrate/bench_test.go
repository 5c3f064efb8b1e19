package migrate

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"xedge/xmppd/piefxis"
	"xedge/xmppd/xmlstream"
)

// BenchmarkImport imports b.N users shaped like bench/piefxis's (10 roster
// items, a vCard each) into a local store; run with -benchtime 20000x.
func BenchmarkImport(b *testing.B) {
	path := filepath.Join(b.TempDir(), "site.xml")
	f, _ := os.Create(path)
	w, _ := piefxis.NewWriter(f)
	w.StartHost("bench.example")
	salt := make([]byte, 16)
	key := make([]byte, 20)
	for i := 0; i < b.N; i++ {
		u := &piefxis.User{Name: "user" + strconv.Itoa(i), SCRAM: []piefxis.SCRAM{{Mechanism: "SCRAM-SHA-1", Iterations: 4096, Salt: salt, StoredKey: key, ServerKey: key}}}
		for k := 1; k <= 10; k++ {
			u.Roster = append(u.Roster, piefxis.RosterItem{JID: "user" + strconv.Itoa((i+k*7919)%b.N) + "@bench.example", Name: "Contact", Subscription: "both", Groups: []string{"G"}})
		}
		u.VCard = xmlstream.New(piefxis.NSVCard, "vCard").Append(xmlstream.New(piefxis.NSVCard, "FN").AppendText("User"))
		w.User(u)
	}
	w.Close()
	f.Close()
	st := newStore(b)
	b.ResetTimer()
	if _, err := Import(context.Background(), st, ImportOptions{Domain: "bench.example"}, path, nil); err != nil {
		b.Fatal(err)
	}
}
