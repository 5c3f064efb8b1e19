package piefxis

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"xedge/xmppd/internal/scram"
)

func readAll(t *testing.T, path string) map[string]*User {
	t.Helper()
	users := map[string]*User{}
	var r Reader
	err := r.ReadFile(path, func(host string, u *User) error {
		users[host+"/"+u.Name] = u
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return users
}

// ejabberd 23.01's export_piefxis (made by the integration test's scenario):
// SCRAM credentials base64-encoded twice, privacy list from XEP-0191 blocking,
// pending inbound request, offline message, an include per host.
func TestReadEjabberdExport(t *testing.T) {
	users := readAll(t, "testdata/ejabberd-23.01.xml")
	if len(users) != 3 {
		t.Fatalf("users: %v", len(users))
	}
	a := users["ej.example/alice"]
	if len(a.SCRAM) != 1 || a.SCRAM[0].Mechanism != "SCRAM-SHA-1" || len(a.SCRAM[0].Salt) != 16 {
		t.Fatalf("alice scram: %+v", a.SCRAM)
	}
	k := a.SCRAM[0]
	if !(scram.Keys{Salt: k.Salt, Iterations: k.Iterations, StoredKey: k.StoredKey, ServerKey: k.ServerKey}).Verify(scram.SHA1, "al1ce pw&<'") {
		t.Fatal("alice's exported SCRAM keys do not verify her password")
	}
	if len(a.Roster) != 2 || a.Roster[1].JID != "dave@remote.example" || !a.Roster[1].Ask || strings.Join(a.Roster[1].Groups, ",") != "Work,Old" {
		t.Fatalf("alice roster: %+v", a.Roster)
	}
	if len(a.Pending) != 1 || a.Pending[0].From != "carol@ej.example" || a.Pending[0].Status != "carol here" {
		t.Fatalf("alice pending: %+v", a.Pending)
	}
	if a.VCard == nil || a.VCard.ChildText(NSVCard, "FN") != "Alice Liddell" || len(a.Private) != 1 || a.Privacy == nil {
		t.Fatalf("alice vcard/private/privacy: %v %v %v", a.VCard, a.Private, a.Privacy)
	}
	c := users["ej.example/carol"]
	if len(c.Offline) != 1 || c.Offline[0].ChildText(NSClient, "body") != "hello carol, you are offline" {
		t.Fatalf("carol offline: %v", c.Offline)
	}
	if len(c.Skipped) != 0 || len(a.Skipped) != 0 {
		t.Fatalf("skipped: %v %v", a.Skipped, c.Skipped)
	}
}

func TestReadSpecExample(t *testing.T) {
	users := readAll(t, "testdata/xep0227-example.xml")
	j := users["capulet.example/juliet"]
	if j == nil || j.Password != "s3crEt" || len(j.Roster) != 2 || j.Roster[0].Name != "Romeo" || j.Roster[0].Subscription != "both" {
		t.Fatalf("juliet: %+v", j)
	}
	if len(j.Offline) != 1 || len(j.Private) != 1 || j.VCard.ChildText(NSVCard, "NICKNAME") != "JuliC" || len(j.Pending) != 1 {
		t.Fatalf("juliet sections: %+v", j)
	}
	r := users["capulet.example/romeo"]
	k := r.SCRAM[0]
	if !(scram.Keys{Salt: k.Salt, Iterations: k.Iterations, StoredKey: k.StoredKey, ServerKey: k.ServerKey}).Verify(scram.SHA1, "pencil") {
		t.Fatal("romeo's SCRAM keys do not verify")
	}
	if len(r.Skipped) != 1 || r.Skipped[0] != "{urn:example:nothing}unknown-thing" {
		t.Fatalf("romeo skipped: %v", r.Skipped)
	}
}

// Written and read again, every user is the same (data and credentials).
func TestWriteReadRoundTrip(t *testing.T) {
	for _, f := range []string{"testdata/ejabberd-23.01.xml", "testdata/xep0227-example.xml"} {
		users := readAll(t, f)
		var buf bytes.Buffer
		w, _ := NewWriter(&buf)
		hosts := map[string][]*User{}
		for k, u := range users {
			h := k[:strings.IndexByte(k, '/')]
			hosts[h] = append(hosts[h], u)
		}
		for h, us := range hosts {
			if err := w.StartHost(h); err != nil {
				t.Fatal(err)
			}
			for _, u := range us {
				if err := w.User(u); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		again := map[string]*User{}
		var r Reader
		if err := r.Read(&buf, "", func(host string, u *User) error { again[host+"/"+u.Name] = u; return nil }); err != nil {
			t.Fatalf("%s: re-read: %v\n%s", f, err, buf.String())
		}
		for k, u := range users {
			v := again[k]
			if v == nil {
				t.Fatalf("%s: %s lost", f, k)
			}
			if Canonical(u) != Canonical(v) {
				t.Fatalf("%s: %s differs:\n%s\n---\n%s", f, k, Canonical(u), Canonical(v))
			}
			if u.Password != v.Password || len(u.SCRAM) != len(v.SCRAM) {
				t.Fatalf("%s: %s credentials differ", f, k)
			}
			for i := range u.SCRAM {
				if !bytes.Equal(u.SCRAM[i].StoredKey, v.SCRAM[i].StoredKey) || !bytes.Equal(u.SCRAM[i].Salt, v.SCRAM[i].Salt) {
					t.Fatalf("%s: %s SCRAM differs", f, k)
				}
			}
		}
	}
}

func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		"doctype":     "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><server-data xmlns='urn:xmpp:pie:0'/>",
		"escape":      "<server-data xmlns='urn:xmpp:pie:0' xmlns:xi='http://www.w3.org/2001/XInclude'><xi:include href='../secret.xml'/></server-data>",
		"absolute":    "<server-data xmlns='urn:xmpp:pie:0' xmlns:xi='http://www.w3.org/2001/XInclude'><xi:include href='/etc/passwd'/></server-data>",
		"truncated":   "<server-data xmlns='urn:xmpp:pie:0'><host jid='a.example'><user name='x'>",
		"wrong root":  "<foo/>",
		"no host jid": "<server-data xmlns='urn:xmpp:pie:0'><host><user name='x'/></host></server-data>",
		"bad scram":   "<server-data xmlns='urn:xmpp:pie:0'><host jid='a'><user name='x'><scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'><iter-count>1</iter-count><salt>AA==</salt><server-key>AA==</server-key><stored-key>AA==</stored-key></scram-credentials></user></host></server-data>",
	}
	for name, doc := range cases {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".xml")
		os.WriteFile(p, []byte(doc), 0o600)
		var r Reader
		n := 0
		err := r.ReadFile(p, func(string, *User) error { n++; return nil })
		if err == nil {
			t.Errorf("%s: accepted (%d users)", name, n)
		}
	}
}
