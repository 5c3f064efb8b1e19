package pep

import (
	"crypto/sha1"
	"encoding/base64"
	"sort"
	"strings"

	"xedge/xmppd/xmlstream"
)

// capsVer computes the XEP-0115 §5.1 verification string of a disco#info result
// with SHA-1 (identities, features, then extended forms, each sorted).
func capsVer(q *xmlstream.Element) string {
	var ids, feats []string
	type form struct {
		typ    string
		fields []string
	}
	var forms []form
	for _, c := range q.Children() {
		switch {
		case c.Local == "identity":
			ids = append(ids, c.Attr("category")+"/"+c.Attr("type")+"/"+c.Lang()+"/"+c.Attr("name"))
		case c.Local == "feature":
			feats = append(feats, c.Attr("var"))
		case c.Local == "x" && c.Space == NSData:
			var f form
			for _, fl := range c.Children() {
				if fl.Local != "field" {
					continue
				}
				var vals []string
				for _, v := range fl.Children() {
					if v.Local == "value" {
						vals = append(vals, v.Text())
					}
				}
				if fl.Attr("var") == "FORM_TYPE" {
					if len(vals) > 0 {
						f.typ = vals[0]
					}
					continue
				}
				sort.Strings(vals)
				f.fields = append(f.fields, fl.Attr("var")+"<"+strings.Join(vals, "<"))
			}
			sort.Strings(f.fields)
			forms = append(forms, f)
		}
	}
	sort.Strings(ids)
	sort.Strings(feats)
	sort.SliceStable(forms, func(i, j int) bool { return forms[i].typ < forms[j].typ })
	var b strings.Builder
	for _, s := range ids {
		b.WriteString(s + "<")
	}
	for _, s := range feats {
		b.WriteString(s + "<")
	}
	for _, f := range forms {
		b.WriteString(f.typ + "<")
		for _, s := range f.fields {
			b.WriteString(s + "<")
		}
	}
	sum := sha1.Sum([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(sum[:])
}
