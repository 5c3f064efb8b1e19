package jid

import (
	"strings"
	"testing"
)

// checkSame fails if the fast path handles j and its result differs from the full
// path's (or the full path refuses j).
func checkSame(t *testing.T, j JID) {
	t.Helper()
	fast, ok := j.prepareASCII()
	if !ok {
		return
	}
	full, err := j.prepareFull()
	if err != nil || fast != full {
		t.Fatalf("prepare(%q, %q, %q): fast path %#v, full path %#v, %v", j.Local, j.Domain, j.Resource, fast, full, err)
	}
}

// FuzzPrepareASCII is the differential test of the ASCII fast path: for any parts,
// what prepareASCII handles it must prepare exactly as the full PRECIS/IDNA path.
func FuzzPrepareASCII(f *testing.F) {
	for _, s := range [][3]string{
		{"juliet", "example.com", "balcony"},
		{"Juliet", "Example.COM.", "Balcony Room"},
		{"a.b-c_d+e", "xn--bcher-kva.example", "r/1@x"},
		{"", "[::1]", ""},
		{"x", "a--b.c", "\t"},
		{"x", "-a.b", "é"},
		{"X", "1.2.3.4", "~!#$%^*()"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, local, domain, resource string) {
		checkSame(t, JID{Local: local, Domain: domain, Resource: resource})
	})
}

// TestPrepareASCIIExhaustive compares the paths on every one- and two-byte ASCII
// string in each part.
func TestPrepareASCIIExhaustive(t *testing.T) {
	var strs []string
	for a := 0; a < 128; a++ {
		strs = append(strs, string(rune(a)))
		for b := 0; b < 128; b++ {
			strs = append(strs, string([]byte{byte(a), byte(b)}))
		}
	}
	for _, s := range strs {
		checkSame(t, JID{Local: s, Domain: "example.com"})
		checkSame(t, JID{Local: "u", Domain: "example.com", Resource: s})
		checkSame(t, JID{Domain: s})
		checkSame(t, JID{Domain: "a" + s + "b.example"})
		checkSame(t, JID{Domain: "example." + s})
	}
}

// TestPrepareASCIILong compares the paths at the length limits (RFC 7622 §3: 1023
// bytes per part; DNS's 253/63 are not enforced by the profile xmppd uses).
func TestPrepareASCIILong(t *testing.T) {
	label := strings.Repeat("a", 63)
	for _, n := range []int{3, 4, 15, 16, 17} {
		d := strings.TrimSuffix(strings.Repeat(label+".", n), ".")
		checkSame(t, JID{Domain: d})
		checkSame(t, JID{Domain: d + "."})
	}
	for _, n := range []int{maxPart - 1, maxPart, maxPart + 1} {
		s := strings.Repeat("x", n)
		checkSame(t, JID{Local: s, Domain: "example.com"})
		checkSame(t, JID{Local: "u", Domain: "example.com", Resource: s})
	}
}

// TestPrepareASCIITaken makes sure the common JIDs take the fast path, and the
// unusual ones do not.
func TestPrepareASCIITaken(t *testing.T) {
	for _, j := range []JID{
		{Local: "user42", Domain: "bench.example", Resource: "res-1"},
		{Local: "Juliet", Domain: "Example.COM.", Resource: "Balcony Room"},
		{Local: "a.b_c+d-e", Domain: "1-2.example.org", Resource: "x@y/z"},
		{Domain: "localhost"},
	} {
		if _, ok := j.prepareASCII(); !ok {
			t.Errorf("%#v: fast path not taken", j)
		}
		checkSame(t, j)
	}
	for _, j := range []JID{
		{Local: "älice", Domain: "example.com"},
		{Local: "a b", Domain: "example.com"},
		{Local: "a", Domain: "xn--bcher-kva.example"},
		{Local: "a", Domain: "[::1]"},
		{Local: "a", Domain: "ex_ample.com"},
		{Local: "a", Domain: "example.com", Resource: "\x01"},
		{Local: strings.Repeat("a", maxPart+1), Domain: "example.com"},
		{Local: "a", Domain: strings.Repeat("a", 64) + ".com"},
	} {
		if _, ok := j.prepareASCII(); ok {
			t.Errorf("%#v: fast path taken", j)
		}
	}
}

func TestPrepareASCIINoAlloc(t *testing.T) {
	j := JID{Local: "user42", Domain: "bench.example", Resource: "res-1"}
	if n := testing.AllocsPerRun(100, func() { _, _ = j.prepare() }); n != 0 {
		t.Fatalf("prepare of a lower-case ASCII JID: %v allocations", n)
	}
}

var sink JID

func BenchmarkParse(b *testing.B) {
	for _, c := range []struct{ name, in string }{
		{"ascii-full", "user42@bench.example/res-1"},
		{"ascii-bare", "user42@bench.example"},
		{"ascii-upper", "User42@Bench.Example/Res-1"},
		{"unicode", "älice@example.com/res"},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sink, _ = Parse(c.in)
			}
		})
		b.Run(c.name+"/full", func(b *testing.B) {
			j, err := split(c.in)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				sink, _ = j.prepareFull()
			}
		})
	}
}
