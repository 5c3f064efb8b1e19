// Package piefxis reads and writes XEP-0227 (Portable Import/Export Format for
// XMPP-IM Servers) files: one user at a time, with a streaming decoder, so a file
// of any size is read in memory bounded by its largest user. It knows the
// sections ejabberd's `export_piefxis` and Prosody's mod_storage_xep0227 write:
// passwords (plaintext or SCRAM credentials, urn:xmpp:pie:0#scram), rosters with
// groups, subscription states and pending inbound requests, vCards, private XML
// storage, offline messages, privacy lists (XEP-0016) and block lists (XEP-0191);
// anything else under a user is counted as skipped, never silently lost.
//
// It owns the file format only: what the sections mean for xmppd's tables is
// xmppd/mod/migrate's. It must not import storage, the xmppd core or any module.
package piefxis

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"xedge/xmppd/xmlstream"
)

// Namespaces.
const (
	NS         = "urn:xmpp:pie:0"
	NSOld      = "http://www.xmpp.org/extensions/xep-0227.html#ns" // ejabberd before 2.1, XEP-0227 drafts
	NSSCRAM    = "urn:xmpp:pie:0#scram"
	NSXInclude = "http://www.w3.org/2001/XInclude"
	NSRoster   = "jabber:iq:roster"
	NSPrivate  = "jabber:iq:private"
	NSPrivacy  = "jabber:iq:privacy"
	NSBlocking = "urn:xmpp:blocking"
	NSVCard    = "vcard-temp"
	NSClient   = xmlstream.NSClient
)

// SCRAM is one SCRAM credential of a user (XEP-0227 §4.2's scram-credentials).
type SCRAM struct {
	Mechanism  string // "SCRAM-SHA-1", "SCRAM-SHA-256"
	Iterations int
	Salt       []byte
	StoredKey  []byte
	ServerKey  []byte
}

// RosterItem is one roster item (RFC 6121 §2.1.2).
type RosterItem struct {
	JID          string
	Name         string
	Subscription string // none, to, from, both ("" read as none)
	Ask          bool   // ask='subscribe': a pending outbound request
	Approved     bool   // approved='true': a pre-approval (RFC 6121 §3.4)
	Groups       []string
}

// Pending is a pending inbound subscription request, written as the
// <presence type='subscribe'/> the contact sent.
type Pending struct {
	From   string
	Status string
}

// User is one <user/> with the sections this package understands.
type User struct {
	Name     string
	Password string // plaintext; "" when absent
	SCRAM    []SCRAM
	Roster   []RosterItem
	// HasRoster says a roster query was present (an empty roster is not no roster).
	HasRoster bool
	Pending   []Pending
	VCard     *xmlstream.Element   // vcard-temp vCard
	Private   []*xmlstream.Element // children of the jabber:iq:private query
	Offline   []*xmlstream.Element // messages of <offline-messages/>
	Privacy   *xmlstream.Element   // the jabber:iq:privacy query, as found
	Blocklist []string             // JIDs of <blocklist xmlns='urn:xmpp:blocking'/>
	// Skipped names the children not understood, as "{namespace}local".
	Skipped []string
}

// hashSize is the digest size of a SCRAM mechanism's hash, 0 if unknown.
func hashSize(mech string) int {
	switch mech {
	case "SCRAM-SHA-1":
		return 20
	case "SCRAM-SHA-256":
		return 32
	case "SCRAM-SHA-512":
		return 64
	}
	return 0
}

// decodeB64 decodes standard base64, padded or not, ignoring whitespace.
func decodeB64(s string) ([]byte, error) {
	s = strings.Map(func(r rune) rune {
		if r == ' ' || r == '\n' || r == '\r' || r == '\t' {
			return -1
		}
		return r
	}, s)
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

// parseSCRAM reads a scram-credentials element. ejabberd 23.01 writes the salt
// and keys base64-encoded twice (it encodes its stored base64 text again): when
// a key decodes to the base64 text of a key of the hash's size, every field is
// decoded once more.
func parseSCRAM(e *xmlstream.Element) (SCRAM, error) {
	c := SCRAM{Mechanism: e.Attr("mechanism")}
	size := hashSize(c.Mechanism)
	if size == 0 {
		return c, fmt.Errorf("scram-credentials: unknown mechanism %q", c.Mechanism)
	}
	if _, err := fmt.Sscanf(strings.TrimSpace(e.ChildText(NSSCRAM, "iter-count")), "%d", &c.Iterations); err != nil || c.Iterations < 1 {
		return c, fmt.Errorf("scram-credentials %s: bad iter-count", c.Mechanism)
	}
	fields := []struct {
		name string
		dst  *[]byte
	}{{"salt", &c.Salt}, {"stored-key", &c.StoredKey}, {"server-key", &c.ServerKey}}
	for _, f := range fields {
		b, err := decodeB64(e.ChildText(NSSCRAM, f.name))
		if err != nil || len(b) == 0 {
			return c, fmt.Errorf("scram-credentials %s: bad %s", c.Mechanism, f.name)
		}
		*f.dst = b
	}
	if len(c.StoredKey) != size {
		for _, f := range fields {
			b, err := decodeB64(string(*f.dst))
			if err != nil {
				return c, fmt.Errorf("scram-credentials %s: %s is %d bytes, want %d", c.Mechanism, f.name, len(c.StoredKey), size)
			}
			*f.dst = b
		}
	}
	if len(c.StoredKey) != size || len(c.ServerKey) != size {
		return c, fmt.Errorf("scram-credentials %s: keys of %d and %d bytes, want %d", c.Mechanism, len(c.StoredKey), len(c.ServerKey), size)
	}
	return c, nil
}

// scramElement is the inverse of parseSCRAM (single base64, as XEP-0227 says).
func scramElement(c SCRAM) *xmlstream.Element {
	e := xmlstream.New(NSSCRAM, "scram-credentials", "mechanism", c.Mechanism)
	e.Append(xmlstream.New(NSSCRAM, "iter-count").AppendText(fmt.Sprint(c.Iterations)),
		xmlstream.New(NSSCRAM, "salt").AppendText(base64.StdEncoding.EncodeToString(c.Salt)),
		xmlstream.New(NSSCRAM, "server-key").AppendText(base64.StdEncoding.EncodeToString(c.ServerKey)),
		xmlstream.New(NSSCRAM, "stored-key").AppendText(base64.StdEncoding.EncodeToString(c.StoredKey)))
	return e
}

// userFromElement interprets a <user/> element.
func userFromElement(e *xmlstream.Element) (*User, error) {
	u := &User{Name: e.Attr("name"), Password: e.Attr("password")}
	if u.Name == "" {
		return nil, errors.New("user without a name")
	}
	for _, c := range e.Children() {
		switch {
		case c.Space == NSSCRAM && c.Local == "scram-credentials":
			s, err := parseSCRAM(c)
			if err != nil {
				return nil, fmt.Errorf("user %s: %w", u.Name, err)
			}
			dup := false
			for _, o := range u.SCRAM {
				dup = dup || o.Mechanism == s.Mechanism // Prosody 0.12 may repeat it
			}
			if !dup {
				u.SCRAM = append(u.SCRAM, s)
			}
		case c.Space == NSRoster && c.Local == "query":
			u.HasRoster = true
			for _, it := range c.Children() {
				if it.Local != "item" || it.Attr("jid") == "" {
					continue
				}
				ri := RosterItem{JID: it.Attr("jid"), Name: it.Attr("name"), Subscription: it.Attr("subscription"),
					Ask: it.Attr("ask") == "subscribe", Approved: it.Attr("approved") == "true" || it.Attr("approved") == "1"}
				if ri.Subscription == "remove" {
					continue
				}
				for _, g := range it.Children() {
					if g.Local == "group" {
						ri.Groups = append(ri.Groups, g.Text())
					}
				}
				u.Roster = append(u.Roster, ri)
			}
		case c.Local == "presence" && (c.Space == NSClient || c.Space == NS || c.Space == NSOld):
			if c.Attr("type") == "subscribe" && c.Attr("from") != "" {
				u.Pending = append(u.Pending, Pending{From: c.Attr("from"), Status: c.ChildText(c.Space, "status")})
			} else {
				u.Skipped = append(u.Skipped, "presence")
			}
		case c.Space == NSVCard && c.Local == "vCard":
			u.VCard = c
		case c.Space == NSPrivate && c.Local == "query":
			u.Private = append(u.Private, c.Children()...)
		case c.Local == "offline-messages":
			for _, m := range c.Children() {
				if m.Local == "message" {
					u.Offline = append(u.Offline, m)
				}
			}
		case c.Space == NSPrivacy && c.Local == "query":
			u.Privacy = c
		case c.Space == NSBlocking && c.Local == "blocklist":
			for _, it := range c.Children() {
				if it.Local == "item" && it.Attr("jid") != "" {
					u.Blocklist = append(u.Blocklist, it.Attr("jid"))
				}
			}
		default:
			u.Skipped = append(u.Skipped, "{"+c.Space+"}"+c.Local)
		}
	}
	return u, nil
}

// Element returns u as a <user/> element in namespace NS, sections in a fixed
// order: credentials, roster, pending requests, vCard, private storage, offline
// messages, privacy lists, block list.
func (u *User) Element() *xmlstream.Element {
	e := xmlstream.New(NS, "user", "name", u.Name)
	if u.Password != "" {
		e.SetAttr("password", u.Password)
	}
	for _, c := range u.SCRAM {
		e.Append(scramElement(c))
	}
	if u.HasRoster || len(u.Roster) > 0 {
		q := xmlstream.New(NSRoster, "query")
		for _, it := range u.Roster {
			sub := it.Subscription
			if sub == "" {
				sub = "none"
			}
			ie := xmlstream.New(NSRoster, "item", "jid", it.JID)
			if it.Name != "" {
				ie.SetAttr("name", it.Name)
			}
			ie.SetAttr("subscription", sub)
			if it.Ask {
				ie.SetAttr("ask", "subscribe")
			}
			if it.Approved {
				ie.SetAttr("approved", "true")
			}
			for _, g := range it.Groups {
				ie.Append(xmlstream.New(NSRoster, "group").AppendText(g))
			}
			q.Append(ie)
		}
		e.Append(q)
	}
	for _, p := range u.Pending {
		pe := xmlstream.New(NSClient, "presence", "from", p.From, "type", "subscribe")
		if p.Status != "" {
			pe.Append(xmlstream.New(NSClient, "status").AppendText(p.Status))
		}
		e.Append(pe)
	}
	if u.VCard != nil {
		e.Append(u.VCard)
	}
	if len(u.Private) > 0 {
		q := xmlstream.New(NSPrivate, "query")
		for _, p := range u.Private {
			q.Append(p)
		}
		e.Append(q)
	}
	if len(u.Offline) > 0 {
		o := xmlstream.New(NS, "offline-messages")
		for _, m := range u.Offline {
			o.Append(m)
		}
		e.Append(o)
	}
	if u.Privacy != nil {
		e.Append(u.Privacy)
	}
	if len(u.Blocklist) > 0 {
		b := xmlstream.New(NSBlocking, "blocklist")
		for _, j := range u.Blocklist {
			b.Append(xmlstream.New(NSBlocking, "item", "jid", j))
		}
		e.Append(b)
	}
	return e
}
