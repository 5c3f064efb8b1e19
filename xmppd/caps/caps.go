// Package caps computes entity-capabilities verification strings (XEP-0115 §5.1,
// sha-1) of service discovery information: the server's own (xmppd/c2s) and the
// ones clients advertise (mod/pep checks them before trusting a cache entry).
//
// It keeps no state. It imports only xmlstream.
package caps

import (
	"crypto/sha1"
	"encoding/base64"
	"sort"
	"strings"

	"xedge/xmppd/xmlstream"
)

const nsData = "jabber:x:data"

// Ver returns the verification string of a disco#info <query/>: its identities,
// features and extended information forms (XEP-0128).
func Ver(q *xmlstream.Element) string {
	var ids, feats []string
	var forms []*xmlstream.Element
	for _, c := range q.Children() {
		switch {
		case c.Local == "identity":
			ids = append(ids, c.Attr("category")+"/"+c.Attr("type")+"/"+c.Lang()+"/"+c.Attr("name"))
		case c.Local == "feature":
			feats = append(feats, c.Attr("var"))
		case c.Local == "x" && c.Space == nsData:
			forms = append(forms, c)
		}
	}
	return Hash(String(ids, feats) + Forms(forms))
}

// String is the part of the §5.1 string that identities (category/type/lang/name)
// and features make, each sorted and followed by '<'.
func String(identities, features []string) string {
	ids := append([]string(nil), identities...)
	feats := append([]string(nil), features...)
	sort.Strings(ids)
	sort.Strings(feats)
	var b strings.Builder
	for _, s := range ids {
		b.WriteString(s + "<")
	}
	for _, s := range feats {
		b.WriteString(s + "<")
	}
	return b.String()
}

// Forms is the part of the §5.1 string the extended forms make: the forms sorted
// by FORM_TYPE, each as FORM_TYPE<, then its other fields sorted by var, each as
// var< followed by its values sorted, each as value<. A form without a FORM_TYPE
// is left out (§5.4 has receivers ignore it).
func Forms(forms []*xmlstream.Element) string {
	type field struct {
		v    string
		vals []string
	}
	type form struct {
		typ    string
		fields []field
	}
	var fs []form
	for _, x := range forms {
		var fm form
		typed := false
		for _, fl := range x.Children() {
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
					fm.typ, typed = vals[0], true
				}
				continue
			}
			sort.Strings(vals)
			fm.fields = append(fm.fields, field{fl.Attr("var"), vals})
		}
		if typed {
			sort.Slice(fm.fields, func(i, j int) bool { return fm.fields[i].v < fm.fields[j].v })
			fs = append(fs, fm)
		}
	}
	sort.SliceStable(fs, func(i, j int) bool { return fs[i].typ < fs[j].typ })
	var b strings.Builder
	for _, fm := range fs {
		b.WriteString(fm.typ + "<")
		for _, fl := range fm.fields {
			b.WriteString(fl.v + "<")
			for _, v := range fl.vals {
				b.WriteString(v + "<")
			}
		}
	}
	return b.String()
}

// Hash returns the sha-1 verification string of a §5.1 string, base64-encoded.
func Hash(s string) string {
	sum := sha1.Sum([]byte(s))
	return base64.StdEncoding.EncodeToString(sum[:])
}
