// Package jid parses and prepares XMPP addresses per RFC 7622, using the PRECIS
// profiles of golang.org/x/text/secure/precis: UsernameCaseMapped for the localpart,
// IDNA (UTS #46) plus lowercasing for the domainpart, OpaqueString for the resource.
//
// It owns nothing else and must not import other xmppd packages.
package jid

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/text/secure/precis"
)

// JID is a prepared address. The zero value is the empty JID.
type JID struct {
	Local, Domain, Resource string
}

// ErrMalformed is wrapped by every Parse error.
var ErrMalformed = errors.New("jid: malformed")

const maxPart = 1023

var idnaProfile = idna.New(idna.MapForLookup(), idna.Transitional(false), idna.StrictDomainName(false))

// Parse splits and prepares s. Errors wrap ErrMalformed (the caller answers jid-malformed).
func Parse(s string) (JID, error) {
	j, err := split(s)
	if err != nil {
		return JID{}, err
	}
	return j.prepare()
}

// split splits s into its unprepared parts.
func split(s string) (JID, error) {
	if !utf8.ValidString(s) {
		return JID{}, fmt.Errorf("%w: invalid UTF-8", ErrMalformed)
	}
	var j JID
	rest := s
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		j.Resource = rest[i+1:]
		rest = rest[:i]
		if j.Resource == "" {
			return JID{}, fmt.Errorf("%w: empty resourcepart", ErrMalformed)
		}
	}
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		j.Local = rest[:i]
		rest = rest[i+1:]
		if j.Local == "" {
			return JID{}, fmt.Errorf("%w: empty localpart", ErrMalformed)
		}
	}
	j.Domain = rest
	return j, nil
}

// MustParse is Parse for constants in tests and tables; it panics on error.
func MustParse(s string) JID {
	j, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return j
}

// New prepares a JID from its parts.
func New(local, domain, resource string) (JID, error) {
	return JID{Local: local, Domain: domain, Resource: resource}.prepare()
}

func (j JID) prepare() (JID, error) {
	if r, ok := j.prepareASCII(); ok {
		return r, nil
	}
	return j.prepareFull()
}

// prepareFull is the complete RFC 7622 preparation (PRECIS and IDNA).
func (j JID) prepareFull() (JID, error) {
	var err error
	d := strings.TrimSuffix(j.Domain, ".")
	if d == "" {
		return JID{}, fmt.Errorf("%w: empty domainpart", ErrMalformed)
	}
	if d[0] == '[' { // IPv6 literal
		j.Domain = strings.ToLower(d)
	} else {
		if j.Domain, err = idnaProfile.ToUnicode(d); err != nil {
			return JID{}, fmt.Errorf("%w: domainpart: %v", ErrMalformed, err)
		}
		j.Domain = strings.ToLower(j.Domain)
	}
	if len(j.Domain) > maxPart {
		return JID{}, fmt.Errorf("%w: domainpart too long", ErrMalformed)
	}
	if j.Local != "" {
		if j.Local, err = precis.UsernameCaseMapped.String(j.Local); err != nil {
			return JID{}, fmt.Errorf("%w: localpart: %v", ErrMalformed, err)
		}
		if len(j.Local) > maxPart || strings.ContainsAny(j.Local, "\"&'/:<>@") {
			return JID{}, fmt.Errorf("%w: localpart has a forbidden character or is too long", ErrMalformed)
		}
	}
	if j.Resource != "" {
		if j.Resource, err = precis.OpaqueString.String(j.Resource); err != nil {
			return JID{}, fmt.Errorf("%w: resourcepart: %v", ErrMalformed, err)
		}
		if len(j.Resource) > maxPart {
			return JID{}, fmt.Errorf("%w: resourcepart too long", ErrMalformed)
		}
	}
	return j, nil
}

// Bare returns the JID without its resource.
func (j JID) Bare() JID { j.Resource = ""; return j }

// WithResource returns the JID with resource r (not prepared; use New for untrusted input).
func (j JID) WithResource(r string) JID { j.Resource = r; return j }

// IsZero reports whether j is empty.
func (j JID) IsZero() bool { return j.Domain == "" }

// IsBare reports whether j has no resource.
func (j JID) IsBare() bool { return j.Resource == "" }

// IsServer reports whether j is a domain-only JID.
func (j JID) IsServer() bool { return j.Local == "" && j.Resource == "" }

// String formats j.
func (j JID) String() string {
	if j.Domain == "" {
		return ""
	}
	n := len(j.Domain)
	if j.Local != "" {
		n += len(j.Local) + 1
	}
	if j.Resource != "" {
		n += len(j.Resource) + 1
	}
	var b strings.Builder
	b.Grow(n)
	if j.Local != "" {
		b.WriteString(j.Local)
		b.WriteByte('@')
	}
	b.WriteString(j.Domain)
	if j.Resource != "" {
		b.WriteByte('/')
		b.WriteString(j.Resource)
	}
	return b.String()
}
