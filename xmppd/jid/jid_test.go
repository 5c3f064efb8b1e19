package jid

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	cases := []struct {
		in, want string
		bad      bool
	}{
		{in: "juliet@example.com", want: "juliet@example.com"},
		{in: "Juliet@Example.COM/Balcony", want: "juliet@example.com/Balcony"},
		{in: "example.com", want: "example.com"},
		{in: "example.com.", want: "example.com"},
		{in: "juliet@example.com/foo@bar/baz", want: "juliet@example.com/foo@bar/baz"},
		{in: "ÄLICE@example.com", want: "älice@example.com"},
		{in: "@example.com", bad: true},
		{in: "juliet@", bad: true},
		{in: "juliet@example.com/", bad: true},
		{in: "jul iet@example.com", bad: true},
		{in: "juliet\xff@example.com", bad: true},
		{in: "", bad: true},
	}
	for _, c := range cases {
		j, err := Parse(c.in)
		if c.bad {
			if err == nil || !errors.Is(err, ErrMalformed) {
				t.Errorf("Parse(%q) = %v, %v; want ErrMalformed", c.in, j, err)
			}
			continue
		}
		if err != nil || j.String() != c.want {
			t.Errorf("Parse(%q) = %q, %v; want %q", c.in, j, err, c.want)
		}
	}
}

func TestBare(t *testing.T) {
	j := MustParse("a@b/c")
	if j.Bare().String() != "a@b" || !j.Bare().IsBare() || j.IsBare() {
		t.Fatalf("Bare: %v", j.Bare())
	}
}
