package piefxis

import (
	"slices"
	"sort"
	"strings"

	"xedge/xmppd/jid"
	"xedge/xmppd/xmlstream"
)

// Canonical returns u's data (not its credentials) in a normalized text form, so
// two files can be compared whatever their order and formatting: roster items by
// JID with sorted groups, pending requests and block list sorted, private
// fragments by namespace, elements with sorted attributes; JIDs prepared (RFC
// 7622); offline messages in file order, with attributes only ordered.
func Canonical(u *User) string {
	var b strings.Builder
	b.WriteString("user " + u.Name + "\n")
	items := slices.Clone(u.Roster)
	sort.Slice(items, func(i, j int) bool { return prep(items[i].JID) < prep(items[j].JID) })
	for _, it := range items {
		sub := it.Subscription
		if sub == "" {
			sub = "none"
		}
		g := slices.Clone(it.Groups)
		sort.Strings(g)
		b.WriteString("roster " + prep(it.JID) + " name=" + it.Name + " sub=" + sub)
		if it.Ask {
			b.WriteString(" ask")
		}
		if it.Approved {
			b.WriteString(" approved")
		}
		b.WriteString(" groups=" + strings.Join(g, "|") + "\n")
	}
	var pend []string
	for _, p := range u.Pending {
		pend = append(pend, "pending "+bare(p.From)+" status="+p.Status+"\n")
	}
	sort.Strings(pend)
	b.WriteString(strings.Join(pend, ""))
	if u.VCard != nil {
		b.WriteString("vcard " + canonXML(u.VCard) + "\n")
	}
	var priv []string
	for _, p := range u.Private {
		priv = append(priv, "private "+canonXML(p)+"\n")
	}
	sort.Strings(priv)
	b.WriteString(strings.Join(priv, ""))
	for _, m := range u.Offline {
		b.WriteString("offline " + canonXML(m) + "\n")
	}
	if u.Privacy != nil {
		b.WriteString("privacy " + canonXML(u.Privacy) + "\n")
	}
	bl := make([]string, 0, len(u.Blocklist))
	for _, j := range u.Blocklist {
		bl = append(bl, prep(j))
	}
	sort.Strings(bl)
	bl = slices.Compact(bl)
	for _, j := range bl {
		b.WriteString("blocked " + j + "\n")
	}
	return b.String()
}

func prep(s string) string {
	if j, err := jid.Parse(s); err == nil {
		return j.String()
	}
	return s
}

func bare(s string) string {
	if j, err := jid.Parse(s); err == nil {
		return j.Bare().String()
	}
	return s
}

// canonXML serializes e with its attributes sorted (recursively).
func canonXML(e *xmlstream.Element) string {
	return string(xmlstream.AppendElement(nil, sortAttrs(e), ""))
}

func sortAttrs(e *xmlstream.Element) *xmlstream.Element {
	c := &xmlstream.Element{Space: e.Space, Local: e.Local, Attrs: slices.Clone(e.Attrs)}
	sort.Slice(c.Attrs, func(i, j int) bool {
		if c.Attrs[i].Space != c.Attrs[j].Space {
			return c.Attrs[i].Space < c.Attrs[j].Space
		}
		return c.Attrs[i].Local < c.Attrs[j].Local
	})
	for _, n := range e.Nodes {
		if ce, ok := n.(*xmlstream.Element); ok {
			c.Nodes = append(c.Nodes, sortAttrs(ce))
		} else {
			c.Nodes = append(c.Nodes, n)
		}
	}
	return c
}
