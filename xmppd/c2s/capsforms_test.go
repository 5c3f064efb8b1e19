package c2s

import (
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/xml"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
	"xedge/xmppd/mod/disco"
)

// xep0115Ver computes the XEP-0115 §5.1 ver (sha-1) of a disco#info <query/>
// given as XML text, with encoding/xml: the test's own reading of the rules.
func xep0115Ver(t *testing.T, query string) string {
	t.Helper()
	var q struct {
		Identities []struct {
			Category string `xml:"category,attr"`
			Type     string `xml:"type,attr"`
			Lang     string `xml:"http://www.w3.org/XML/1998/namespace lang,attr"`
			Name     string `xml:"name,attr"`
		} `xml:"identity"`
		Features []struct {
			Var string `xml:"var,attr"`
		} `xml:"feature"`
		Forms []struct {
			Fields []struct {
				Var    string   `xml:"var,attr"`
				Values []string `xml:"value"`
			} `xml:"field"`
		} `xml:"jabber:x:data x"`
	}
	if err := xml.Unmarshal([]byte(query), &q); err != nil {
		t.Fatalf("disco#info answer: %v\n%s", err, query)
	}
	var ids, feats []string
	for _, i := range q.Identities {
		ids = append(ids, i.Category+"/"+i.Type+"/"+i.Lang+"/"+i.Name)
	}
	for _, f := range q.Features {
		feats = append(feats, f.Var)
	}
	sort.Strings(ids)
	sort.Strings(feats)
	s := strings.Join(ids, "<") + "<" + strings.Join(feats, "<") + "<"
	type form struct{ typ, rest string }
	var forms []form
	for _, x := range q.Forms {
		var f form
		var fields []string
		for _, fl := range x.Fields {
			if fl.Var == "FORM_TYPE" {
				f.typ = fl.Values[0]
				continue
			}
			vals := append([]string(nil), fl.Values...)
			sort.Strings(vals)
			fields = append(fields, fl.Var+"<"+strings.Join(append(vals, ""), "<"))
		}
		sort.Strings(fields)
		f.rest = strings.Join(fields, "")
		forms = append(forms, f)
	}
	sort.Slice(forms, func(i, j int) bool { return forms[i].typ < forms[j].typ })
	for _, f := range forms {
		s += f.typ + "<" + f.rest
	}
	sum := sha1.Sum([]byte(s))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// The caps ver in the stream features is the one a client computes from the
// server's disco#info answer, including the contact addresses form (XEP-0157 as
// a XEP-0128 extended form) when addresses are configured.
func TestCapsVerCoversDiscoForms(t *testing.T) {
	e := start(t, func(c *Config) { // disco's identity
		c.IdentityCategory, c.IdentityType, c.IdentityName = "server", "im", "xedge"
	})
	dm := disco.New(nil)
	if err := dm.Start(context.Background(), e.r); err != nil {
		t.Fatal(err)
	}
	dm.SetContactAddresses(map[string][]string{
		"admin-addresses": {"xmpp:admin@localhost", "mailto:admin@example.org"},
		"abuse-addresses": {"mailto:abuse@example.org"},
	})
	e.srv.SetDiscoForms(dm.Forms)

	verRe := regexp.MustCompile(`ver='([^']+)'`)
	c := testenv.Dial(t, e.addr)
	m := verRe.FindStringSubmatch(c.StartTLS("localhost"))
	if m == nil {
		t.Fatal("no caps ver in the stream features")
	}
	c.LoginPlain("localhost", "alice", "secret", "r")
	c.Send("<iq type='get' to='localhost' id='d1'><query xmlns='" + disco.NSInfo + "'/></iq>")
	got := c.Expect("</iq>", 10*time.Second)
	i, j := strings.Index(got, "<query"), strings.LastIndex(got, "</query>")
	if i < 0 || j < 0 || !strings.Contains(got, disco.NSServerInfo) {
		t.Fatalf("disco#info answer without the serverinfo form: %s", got)
	}
	if want := xep0115Ver(t, got[i:j+len("</query>")]); m[1] != want {
		t.Fatalf("stream features advertise ver %q, the disco#info answer hashes to %q:\n%s", m[1], want, got)
	}

	// Without addresses the form goes, and the ver follows.
	dm.SetContactAddresses(nil)
	if v := e.srv.capsVer(); v == m[1] || v != e.srv.computeCapsVer() {
		t.Fatalf("caps ver after the form was removed: %q (before %q)", v, m[1])
	}
}
