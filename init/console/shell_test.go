package console

import (
	"bytes"
	"context"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func testShell() (*Shell, *[]string) {
	var calls []string
	rec := func(name string) func(context.Context, []string, io.Writer) error {
		return func(_ context.Context, args []string, out io.Writer) error {
			calls = append(calls, name+":"+strings.Join(args, "|"))
			if name == "kick" {
				return errors.New("no such session")
			}
			io.WriteString(out, "ok\n")
			return nil
		}
	}
	s := NewShell("xedge> ", []Command{
		{Name: "status", Summary: "status", Run: rec("status")},
		{Name: "sessions", Run: rec("sessions")},
		{Name: "loglevel", Usage: "[get|set LEVEL]", Args: []string{"get", "set"}, Run: rec("loglevel")},
		{Name: "kick", Run: rec("kick")},
		{Name: "register", Run: rec("register")},
		{Name: "reboot", Run: rec("reboot")},
	})
	return s, &calls
}

func TestSplit(t *testing.T) {
	cases := map[string][]string{
		`register alice "pass word"`: {"register", "alice", "pass word"},
		`  status  `:                 {"status"},
		`kick 'a@b/c d'`:             {"kick", "a@b/c d"},
		``:                           nil,
		`x ""`:                       {"x", ""},
	}
	for in, want := range cases {
		got, err := Split(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
	if _, err := Split(`say "oops`); err == nil {
		t.Error("unterminated quote accepted")
	}
}

func TestExecDispatch(t *testing.T) {
	s, calls := testShell()
	var out bytes.Buffer
	ctx := context.Background()
	if !s.Exec(ctx, `register alice "s e c"`, &out) {
		t.Fatalf("register failed: %s", out.String())
	}
	if (*calls)[0] != "register:alice|s e c" {
		t.Fatalf("calls %v", *calls)
	}
	out.Reset()
	if s.Exec(ctx, "sh -c reboot", &out) || !strings.Contains(out.String(), `unknown command "sh"`) {
		t.Fatalf("general shell allowed: %q", out.String())
	}
	out.Reset()
	if s.Exec(ctx, "kick bob@x", &out) || !strings.Contains(out.String(), "error: no such session") {
		t.Fatalf("error not shown: %q", out.String())
	}
	out.Reset()
	if !s.Exec(ctx, "help", &out) || !strings.Contains(out.String(), "loglevel [get|set LEVEL]") {
		t.Fatalf("help: %q", out.String())
	}
	if !s.Exec(ctx, "   ", &out) {
		t.Fatal("empty line failed")
	}
}

func TestComplete(t *testing.T) {
	s, _ := testShell()
	cases := map[string][]string{
		"":            {"help ", "kick ", "loglevel ", "reboot ", "register ", "sessions ", "status "},
		"re":          {"reboot ", "register "},
		"se":          {"sessions "},
		"loglevel ":   {"loglevel get ", "loglevel set "},
		"loglevel s":  {"loglevel set "},
		"status x":    nil,
		"nosuch ":     nil,
		"loglevel s ": nil,
	}
	for in, want := range cases {
		if got := s.Complete(in); !reflect.DeepEqual(got, want) {
			t.Errorf("%q: got %q want %q", in, got, want)
		}
	}
}

func TestSay(t *testing.T) {
	var b bytes.Buffer
	New(&b).Say("ready %s %s", "10.0.2.15", "v1")
	if b.String() != "\r\nxedge: ready 10.0.2.15 v1\r\n" {
		t.Fatalf("%q", b.String())
	}
}
