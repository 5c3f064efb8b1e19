package migrate

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"xedge/storage"
	"xedge/storage/local"
	"xedge/xmppd/accounts"
	"xedge/xmppd/internal/scram"
	"xedge/xmppd/mod/blocking"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/mod/roster"
	"xedge/xmppd/piefxis"
)

func newStore(t testing.TB) storage.Store {
	t.Helper()
	st, err := local.Open(context.Background(), local.Config{Dir: t.TempDir(), Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Stop(context.Background()) })
	return st
}

func export(t *testing.T, st storage.Store, domain string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, _ := piefxis.NewWriter(&buf)
	if _, err := Export(context.Background(), st, domain, w, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func importFile(t *testing.T, st storage.Store, domain, path string) Summary {
	t.Helper()
	sum, err := Import(context.Background(), st, ImportOptions{Domain: domain, BatchRows: 7}, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

func users(t *testing.T, b []byte) map[string]*piefxis.User {
	t.Helper()
	out := map[string]*piefxis.User{}
	var r piefxis.Reader
	if err := r.Read(bytes.NewReader(b), "", func(_ string, u *piefxis.User) error { out[u.Name] = u; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// ejabberd's export imported, exported, imported into a fresh store and exported
// again: the two exports are byte for byte the same, and the first one holds
// ejabberd's data (normalized) with credentials that verify the old passwords.
func TestImportExportRoundTrip(t *testing.T) {
	const domain = "ej.example"
	src := "../../piefxis/testdata/ejabberd-23.01.xml"
	st1 := newStore(t)
	sum := importFile(t, st1, domain, src)
	if sum.Users != 3 || sum.Created != 3 || sum.RosterItems != 4 || sum.Pending != 1 || sum.Offline != 1 ||
		sum.VCards != 1 || sum.Private != 1 || sum.Privacy != 1 || sum.Blocked != 1 || sum.Batches < 2 {
		t.Fatalf("summary: %+v", sum)
	}
	out1 := export(t, st1, domain)
	dir := t.TempDir()
	p1 := filepath.Join(dir, "out1.xml")
	os.WriteFile(p1, out1, 0o600)
	st2 := newStore(t)
	importFile(t, st2, domain, p1)
	out2 := export(t, st2, domain)
	if !bytes.Equal(out1, out2) {
		t.Fatalf("second export differs:\n%s\n---\n%s", out1, out2)
	}

	orig := map[string]*piefxis.User{}
	var r piefxis.Reader
	if err := r.ReadFile(src, func(_ string, u *piefxis.User) error { orig[u.Name] = u; return nil }); err != nil {
		t.Fatal(err)
	}
	got := users(t, out1)
	pw := map[string]string{"alice": "al1ce pw&<'", "bob": "b0b-secret", "carol": "carol"}
	for name, u := range orig {
		g := got[name]
		if g == nil {
			t.Fatalf("%s not exported", name)
		}
		// ejabberd's privacy list carries XEP-0191's block: the export has it both as
		// the privacy list and as the block list.
		want := *u
		if u.Privacy != nil {
			jids, _ := DefaultListBlocks(u.Privacy)
			want.Blocklist = append(want.Blocklist, jids...)
		}
		if piefxis.Canonical(&want) != piefxis.Canonical(g) {
			t.Errorf("%s differs:\n%s---\n%s", name, piefxis.Canonical(&want), piefxis.Canonical(g))
		}
		k := g.SCRAM[0]
		if !(scram.Keys{Salt: k.Salt, Iterations: k.Iterations, StoredKey: k.StoredKey}).Verify(k.Mechanism, pw[name]) {
			t.Errorf("%s: exported keys do not verify the password", name)
		}
	}
}

// A plaintext password becomes both SCRAM keys; an existing account keeps its
// own credentials and gets the data merged; a file of a host not served is
// refused before anything is written (as ejabberd stops at an unknown host),
// or its users are skipped and counted on request.
func TestImportPlaintextAndExisting(t *testing.T) {
	st := newStore(t)
	acc := accounts.New(st, "capulet.example", nil)
	ctx := context.Background()
	if err := acc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := acc.Create(ctx, "romeo", "mine"); err != nil {
		t.Fatal(err)
	}
	sum := importFile(t, st, "capulet.example", "../../piefxis/testdata/xep0227-example.xml")
	if sum.Created != 1 || sum.Existing != 1 || sum.Derived != 1 || sum.Skipped != 1 || len(sum.Warnings) != 1 {
		t.Fatalf("summary: %+v", sum)
	}
	rec, _, _ := acc.Get("juliet")
	if !rec.SHA1.Verify(scram.SHA1, "s3crEt") || !rec.SHA256.Verify(scram.SHA256, "s3crEt") {
		t.Fatal("juliet's derived keys do not verify")
	}
	if _, ok, _ := acc.CheckPassword("romeo", "mine"); !ok {
		t.Fatal("romeo's own password was replaced")
	}
	items, _ := st.Durable(roster.TableItems)
	b, ok, _ := items.Get(modutil.Key("romeo", "juliet@capulet.example"))
	var it roster.Item
	if !ok || json.Unmarshal(b, &it) != nil || it.Sub != "both" || it.Groups[0] != "Lovers" {
		t.Fatalf("romeo's imported roster item: %s", b)
	}
	if v, _, _ := mustTable(t, st, roster.TableVersion).Get("romeo"); len(v) == 0 || string(v) == roster.EmptyVersion {
		t.Fatalf("roster version not bumped: %q", v)
	}
	st2 := newStore(t)
	_, err := Import(ctx, st2, ImportOptions{Domain: "other.example"}, "../../piefxis/testdata/xep0227-example.xml", nil)
	if err == nil || !strings.Contains(err.Error(), "unknown host capulet.example") {
		t.Fatalf("import of another host: %v", err)
	}
	if users, err := st2.Durable(accounts.Table); err == nil {
		if n, _ := users.Count(""); n != 0 {
			t.Fatalf("a refused import wrote %d users", n)
		}
	}
	sum, err = Import(ctx, st2, ImportOptions{Domain: "other.example", SkipUnknownHosts: true}, "../../piefxis/testdata/xep0227-example.xml", nil)
	if err != nil || sum.OtherHosts != 2 || sum.Users != 0 {
		t.Fatalf("other host, skipped: %+v %v", sum, err)
	}
}

func mustTable(t *testing.T, st storage.Store, name string) storage.Table {
	t.Helper()
	tab, err := st.Durable(name)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// Only the default list's plain JID denials are blocks.
func TestDefaultListBlocks(t *testing.T) {
	f := filepath.Join(t.TempDir(), "p.xml")
	os.WriteFile(f, []byte(`<server-data xmlns='urn:xmpp:pie:0'><host jid='a.example'><user name='u' password='p'>
<query xmlns='jabber:iq:privacy'><active name='x'/><default name='main'/>
 <list name='main'><item type='jid' value='Spam@Bad.Example' action='deny' order='1'/><item type='jid' value='msgonly@x' action='deny' order='2'><message/></item>
  <item type='group' value='Enemies' action='deny' order='3'/><item type='jid' value='friend@x' action='allow' order='4'/></list>
 <list name='other'><item type='jid' value='notdefault@x' action='deny' order='1'/></list></query>
<blocklist xmlns='urn:xmpp:blocking'><item jid='direct@x'/></blocklist></user></host></server-data>`), 0o600)
	st := newStore(t)
	sum := importFile(t, st, "a.example", f)
	if sum.Blocked != 2 || len(sum.Warnings) != 1 || !strings.Contains(sum.Warnings[0], "3 item(s)") {
		t.Fatalf("summary: %+v", sum)
	}
	bl := mustTable(t, st, blocking.Table)
	for _, j := range []string{"spam@bad.example", "direct@x"} {
		if _, ok, _ := bl.Get(modutil.Key("u", j)); !ok {
			t.Errorf("%s not blocked", j)
		}
	}
}

// Prosody 0.12's export (prosody-migrator to its xep0227 store: one file per
// user, SCRAM-SHA-1 with a UUID text salt and 10,000 iterations, the pending
// request as a presence in the PIE namespace) given as its directory.
func TestImportProsodyDirectory(t *testing.T) {
	st := newStore(t)
	sum := importFile(t, st, "pr.example", "../../piefxis/testdata/prosody-0.12")
	if sum.Users != 3 || sum.RosterItems != 4 || sum.Pending != 1 || sum.VCards != 1 || sum.Private != 1 || len(sum.Warnings) != 0 {
		t.Fatalf("summary: %+v", sum)
	}
	acc := accounts.New(st, "pr.example", nil)
	rec, ok, _ := acc.Get("alice")
	if !ok || !rec.SHA1.Verify(scram.SHA1, "al1ce pw&<'") || len(rec.SHA256.StoredKey) != 0 {
		t.Fatalf("alice's SCRAM-SHA-1 keys do not verify her password: %+v", rec)
	}
	if _, ok, _ := mustTable(t, st, roster.TablePending).Get(modutil.Key("alice", "carol@pr.example")); !ok {
		t.Fatal("carol's pending request lost")
	}
}
