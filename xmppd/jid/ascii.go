package jid

import "strings"

// The ASCII fast path of preparation. Almost every JID on the wire is plain ASCII
// (letters, digits, a few punctuation characters) for which PRECIS and IDNA only
// lower-case: prepareASCII does that with byte loops and no allocation (unless there
// is an upper-case letter to fold), and says "not handled" for anything else —
// non-ASCII, control characters, IPv6 literals, Punycode labels, unusual hyphen
// placement, over-long parts — so that prepareFull decides it, errors included.
// FuzzPrepareASCII checks that whatever it handles, it prepares exactly as
// prepareFull does.

// localOK[c] is true for the ASCII bytes a localpart may hold unchanged or
// lower-cased: printable ASCII (PRECIS IdentifierClass ASCII7) except the characters
// RFC 7622 §3.3.1 forbids.
var localOK, resourceOK, domainOK [256]bool

func init() {
	for c := 0x21; c <= 0x7e; c++ {
		localOK[c] = true
	}
	for _, c := range "\"&'/:<>@" {
		localOK[c] = false
	}
	// OpaqueString (FreeformClass) takes every printable ASCII byte and the space
	// as they are.
	for c := 0x20; c <= 0x7e; c++ {
		resourceOK[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		domainOK[c] = true
		domainOK[c-'a'+'A'] = true
	}
	for c := '0'; c <= '9'; c++ {
		domainOK[c] = true
	}
	domainOK['-'] = true
	domainOK['.'] = true
}

// prepareASCII prepares j if every part is in the fast path's subset; ok is false
// otherwise (and then j must go through prepareFull).
func (j JID) prepareASCII() (JID, bool) {
	d := j.Domain
	if n := len(d); n > 0 && d[n-1] == '.' {
		d = d[:n-1]
	}
	if d == "" || len(d) > maxPart || len(j.Local) > maxPart || len(j.Resource) > maxPart {
		return JID{}, false
	}
	var ok bool
	if d, ok = asciiDomain(d); !ok {
		return JID{}, false
	}
	j.Domain = d
	if j.Local != "" {
		upper := false
		for i := 0; i < len(j.Local); i++ {
			c := j.Local[i]
			if !localOK[c] {
				return JID{}, false
			}
			upper = upper || ('A' <= c && c <= 'Z')
		}
		if upper {
			j.Local = strings.ToLower(j.Local)
		}
	}
	for i := 0; i < len(j.Resource); i++ {
		if !resourceOK[j.Resource[i]] {
			return JID{}, false
		}
	}
	return j, true
}

// asciiDomain lower-cases a domainpart made of LDH labels (letters, digits, inner
// hyphens, 1-63 bytes each, no "xn--"-style label), which UTS #46 leaves as it is
// but for the case.
func asciiDomain(d string) (string, bool) {
	upper := false
	start := 0
	for i := 0; i <= len(d); i++ {
		if i < len(d) && d[i] != '.' {
			c := d[i]
			if !domainOK[c] {
				return "", false
			}
			upper = upper || ('A' <= c && c <= 'Z')
			continue
		}
		l := d[start:i]
		if n := len(l); n == 0 || n > 63 || l[0] == '-' || l[n-1] == '-' || (n >= 4 && l[2] == '-' && l[3] == '-') {
			return "", false
		}
		start = i + 1
	}
	if upper {
		d = strings.ToLower(d)
	}
	return d, true
}
