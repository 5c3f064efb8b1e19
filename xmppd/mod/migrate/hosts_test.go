package migrate

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/accounts"
	"xedge/xmppd/internal/scram"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/mod/roster"
	"xedge/xmppd/piefxis"
)

// twoHosts is a XEP-0227 file with two hosts that both have an alice (other
// passwords, other rosters) and a host xmppd will not serve.
const twoHosts = `<?xml version='1.0' encoding='UTF-8'?>
<server-data xmlns='urn:xmpp:pie:0'>
 <host jid='a.example'>
  <user name='alice' password='pa'><query xmlns='jabber:iq:roster'><item jid='bob@b.example' subscription='both' name='Bob B'/></query></user>
  <user name='carol' password='pc'/>
 </host>
 <host jid='B.Example'>
  <user name='alice' password='pb'><query xmlns='jabber:iq:roster'><item jid='alice@a.example' subscription='to'/></query>
   <vCard xmlns='vcard-temp'><FN>Alice of B</FN></vCard></user>
  <user name='bob' password='pbob'/>
 </host>
</server-data>
`

// Each host's users are imported into that host (alice@a.example and
// alice@b.example stay two accounts with their own data); the export writes
// ejabberd's layout, a file per host, which imports into a fresh store and
// exports again byte for byte.
func TestImportExportTwoHosts(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "two.xml")
	os.WriteFile(src, []byte(twoHosts), 0o600)
	opt := ImportOptions{Domain: "a.example", Hosts: []string{"a.example", "b.example"}, BatchRows: 3}

	st := newStore(t)
	sum, err := Import(ctx, st, opt, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Users != 4 || sum.Created != 4 || sum.Hosts["a.example"] != 2 || sum.Hosts["b.example"] != 2 || sum.RosterItems != 2 || sum.VCards != 1 {
		t.Fatalf("summary: %+v", sum)
	}
	acc := accounts.New(st, "a.example", nil)
	for _, c := range []struct {
		host, user, pw string
		ok             bool
	}{
		{"a.example", "alice", "pa", true}, {"a.example", "alice", "pb", false},
		{"b.example", "alice", "pb", true}, {"b.example", "alice", "pa", false},
		{"b.example", "bob", "pbob", true}, {"a.example", "bob", "pbob", false},
	} {
		if _, ok, _ := acc.ForHost(c.host).CheckPassword(c.user, c.pw); ok != c.ok {
			t.Errorf("%s@%s with %q: %v, want %v", c.user, c.host, c.pw, ok, c.ok)
		}
	}
	if _, ok, _ := mustTable(t, st, roster.TableItems).Get(modutil.Key("alice@b.example", "alice@a.example")); !ok {
		t.Error("alice@b.example's roster item is not under her key")
	}
	if _, ok, _ := mustTable(t, st, roster.TableItems).Get(modutil.Key("alice", "alice@a.example")); ok {
		t.Error("alice@b.example's roster item landed in alice@a.example's roster")
	}

	// Export: ejabberd's layout.
	out1 := t.TempDir()
	now := time.Date(2026, 12, 6, 7, 30, 0, 0, time.UTC)
	sum1, err := ExportDir(ctx, st, out1, []string{"a.example", "b.example"}, "a.example", now, nil)
	if err != nil {
		t.Fatal(err)
	}
	mainFile, perHost := ExportFiles(out1, now, []string{"a.example", "b.example"})
	if sum1.File != mainFile || filepath.Base(mainFile) != "20261206-073000.xml" || filepath.Base(perHost[1]) != "20261206-073000_b.example.xml" ||
		len(sum1.Files) != 3 || sum1.Hosts["b.example"] != 2 || sum1.Users != 4 {
		t.Fatalf("export summary: %+v", sum1)
	}
	if ls, _ := os.ReadDir(out1); len(ls) != 3 {
		t.Fatalf("export left %d files (partial files?)", len(ls))
	}
	m, _ := os.ReadFile(mainFile)
	if !strings.Contains(string(m), "<xi:include href='20261206-073000_a.example.xml'/>") {
		t.Fatalf("main file:\n%s", m)
	}
	if hs, err := piefxis.FileHosts(mainFile); err != nil || strings.Join(hs, ",") != "a.example,b.example" {
		t.Fatalf("hosts of the export: %v %v", hs, err)
	}
	got := map[string]*piefxis.User{}
	var r piefxis.Reader
	if err := r.ReadFile(mainFile, func(h string, u *piefxis.User) error { got[u.Name+"@"+h] = u; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got["alice@b.example"].VCard == nil || got["alice@a.example"].VCard != nil ||
		len(got["alice@b.example"].Roster) != 1 || got["alice@b.example"].Roster[0].JID != "alice@a.example" {
		t.Fatalf("exported users: %v", got)
	}
	k := got["alice@b.example"].SCRAM[0]
	if !(scram.Keys{Salt: k.Salt, Iterations: k.Iterations, StoredKey: k.StoredKey}).Verify(k.Mechanism, "pb") {
		t.Fatal("alice@b.example's exported keys do not verify her password")
	}

	// Round trip: the export imported into a fresh store exports the same files.
	st2 := newStore(t)
	if _, err := Import(ctx, st2, opt, mainFile, nil); err != nil {
		t.Fatal(err)
	}
	out2 := t.TempDir()
	if _, err := ExportDir(ctx, st2, out2, []string{"a.example", "b.example"}, "a.example", now, nil); err != nil {
		t.Fatal(err)
	}
	_, perHost2 := ExportFiles(out2, now, []string{"a.example", "b.example"})
	for i := range perHost {
		a, _ := os.ReadFile(perHost[i])
		b, _ := os.ReadFile(perHost2[i])
		if !bytes.Equal(a, b) {
			t.Fatalf("%s differs after import and export:\n%s\n---\n%s", filepath.Base(perHost[i]), a, b)
		}
	}
	m2, _ := os.ReadFile(filepath.Join(out2, filepath.Base(mainFile)))
	if !bytes.Equal(m, m2) {
		t.Fatal("main files differ")
	}

	// A server that serves a.example only refuses the file before writing.
	st3 := newStore(t)
	if _, err := Import(ctx, st3, ImportOptions{Domain: "a.example"}, mainFile, nil); err == nil || !strings.Contains(err.Error(), "unknown host b.example") {
		t.Fatalf("import into a server without b.example: %v", err)
	}
	if _, err := st3.Durable(accounts.Table); err == nil {
		if n, _ := mustTable(t, st3, accounts.Table).Count(""); n != 0 {
			t.Fatalf("the refused import wrote %d accounts", n)
		}
	}
	sum3, err := Import(ctx, st3, ImportOptions{Domain: "a.example", SkipUnknownHosts: true}, mainFile, nil)
	if err != nil || sum3.Users != 2 || sum3.OtherHosts != 2 {
		t.Fatalf("import skipping b.example: %+v %v", sum3, err)
	}
}
