// Package ctl is xmppctl as a library: the command table (for the appliance's console
// shell, which reuses it for completion and dispatch) and Run, which sends one command
// over xmppd's admin socket and prints the answer as a human-readable table, or as
// JSON with --json.
//
// It must not import xmppd packages other than admin (the wire protocol).
package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"xedge/xmppd/admin"
)

// DefaultSocket is the admin socket of `make run` (xmppd --data ./var).
const DefaultSocket = "./var/admin.sock"

// Command describes one xmppctl command.
type Command struct {
	Name    string
	Usage   string // arguments, e.g. "USER PASSWORD"
	Summary string
	MinArgs int
	MaxArgs int
}

var commands = []Command{
	{"register", "USER PASSWORD", "create an account", 2, 2},
	{"unregister", "USER", "delete an account and its data", 1, 1},
	{"passwd", "USER PASSWORD", "change an account's password", 2, 2},
	{"users", "", "list accounts", 0, 0},
	{"sessions", "", "list connected sessions", 0, 0},
	{"kick", "JID", "disconnect a session (full JID) or all of a user's (bare JID)", 1, 1},
	{"status", "", "version, uptime, domain, listeners, sessions, storage", 0, 0},
	{"loglevel", "[get|set LEVEL]", "show or change the log level (debug, info, warn, error)", 0, 2},
	{"tables", "", "list storage tables", 0, 0},
	{"storage", "", "show storage status", 0, 0},
}

// Renderer prints a command's decoded JSON result for humans.
type Renderer func(w io.Writer, args []string, v any) error

// renderers are the human renderings of commands declared in their own files.
var renderers = map[string]Renderer{}

// register adds a command from a file of its own (its init), with an optional
// renderer (nil: the generic key/value or list rendering).
func register(c Command, r Renderer) {
	commands = append(commands, c)
	if r != nil {
		renderers[c.Name] = r
	}
}

// Commands returns the command table (a copy).
func Commands() []Command { return append([]Command(nil), commands...) }

// Lookup returns the command named name.
func Lookup(name string) (Command, bool) {
	for _, c := range commands {
		if c.Name == name {
			return c, true
		}
	}
	return Command{}, false
}

// Usage writes the usage text.
func Usage(w io.Writer) {
	fmt.Fprintln(w, "usage: xmppctl [--socket PATH] [--json] COMMAND [ARGS]")
	fmt.Fprintln(w, "commands:")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "  %s %s\t%s\n", c.Name, c.Usage, c.Summary)
	}
	tw.Flush()
}

// Run executes xmppctl with args (flags, then command and arguments) against the
// socket (used unless --socket is among args) and returns the exit code: 0 ok,
// 1 the command failed, 2 usage error, 3 xmppd unreachable.
func Run(ctx context.Context, socket string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("xmppctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&socket, "socket", socket, "xmppd admin socket")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	fs.Usage = func() { Usage(stderr); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	rest := fs.Args()
	if len(rest) == 0 {
		Usage(stderr)
		return 2
	}
	cmd, ok := Lookup(rest[0])
	if !ok {
		fmt.Fprintf(stderr, "xmppctl: unknown command %q\n", rest[0])
		Usage(stderr)
		return 2
	}
	cargs := rest[1:]
	if len(cargs) < cmd.MinArgs || len(cargs) > cmd.MaxArgs {
		fmt.Fprintf(stderr, "usage: xmppctl %s %s\n", cmd.Name, cmd.Usage)
		return 2
	}
	if socket == "" {
		socket = DefaultSocket
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	resp, err := admin.Call(ctx, socket, admin.Request{Cmd: cmd.Name, Args: cargs})
	if err != nil {
		fmt.Fprintf(stderr, "xmppctl: %s\n", explain(socket, err))
		return 3
	}
	if !resp.OK {
		fmt.Fprintf(stderr, "xmppctl: %s: %s\n", cmd.Name, resp.Error)
		return 1
	}
	if *asJSON {
		var v any
		_ = json.Unmarshal(resp.Result, &v)
		b, _ := json.MarshalIndent(v, "", "  ")
		fmt.Fprintln(stdout, string(b))
		return 0
	}
	if err := render(stdout, cmd.Name, cargs, resp.Result); err != nil {
		fmt.Fprintf(stderr, "xmppctl: %v\n", err)
		return 1
	}
	return 0
}

func explain(socket string, err error) string {
	switch {
	case errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOENT):
		return fmt.Sprintf("admin socket %s does not exist: is xmppd running (and is --socket right)?", socket)
	case errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EACCES):
		return fmt.Sprintf("permission denied on admin socket %s: run as the user xmppd runs as (the socket is mode 0600)", socket)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("nobody listens on admin socket %s: xmppd is not running (stale socket)", socket)
	}
	return fmt.Sprintf("admin socket %s: %v", socket, err)
}

func render(w io.Writer, cmd string, args []string, raw json.RawMessage) error {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("decode result: %w", err)
	}
	if r := renderers[cmd]; r != nil {
		return r(w, args, v)
	}
	switch cmd {
	case "users":
		for _, u := range asList(v) {
			fmt.Fprintln(w, u)
		}
	case "sessions":
		table(w, asMaps(v), "jid", "addr", "tls", "mechanism", "priority", "sm", "csi", "detached", "since")
	case "tables":
		// Like mnesia:info: each table, its copy type, size and the state of
		// its replica on every node (node=state, sorted by node). RAM: for a
		// ram table of a cluster, whether this node's copy is synced; a
		// replica whose RAM tables are being resynced shows "/unsynced".
		table(w, asMaps(v), "name", "kind", "copy", "keys", "bytes", "ram", "replicas")
	case "status", "storage":
		kv(w, v, "")
	case "loglevel":
		fmt.Fprintln(w, v)
	default:
		if s, ok := v.(string); ok {
			fmt.Fprintln(w, s)
		} else {
			kv(w, v, "")
		}
	}
	return nil
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

func asMaps(v any) []map[string]any {
	var out []map[string]any
	for _, x := range asList(v) {
		if m, ok := x.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func cell(v any) string {
	switch x := v.(type) {
	case nil:
		return "-"
	case float64:
		return fmt.Sprint(x)
	case string:
		if x == "" {
			return "-"
		}
		return x
	case []any:
		var s []string
		for _, e := range x {
			s = append(s, cell(e))
		}
		return strings.Join(s, ",")
	case map[string]any:
		if len(x) == 0 {
			return "-"
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			keys[i] = k + "=" + cell(x[k])
		}
		return strings.Join(keys, ",")
	}
	return fmt.Sprint(v)
}

func table(w io.Writer, rows []map[string]any, cols ...string) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.ToUpper(strings.Join(cols, "\t")))
	for _, r := range rows {
		cells := make([]string, len(cols))
		for i, c := range cols {
			cells[i] = cell(r[c])
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()
}

func kv(w io.Writer, v any, indent string) {
	m, ok := v.(map[string]any)
	if !ok {
		fmt.Fprintf(w, "%s%s\n", indent, cell(v))
		return
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	var nested []string
	for _, k := range keys {
		if _, ok := m[k].(map[string]any); ok {
			nested = append(nested, k)
			continue
		}
		fmt.Fprintf(tw, "%s%s:\t%s\n", indent, k, cell(m[k]))
	}
	tw.Flush()
	for _, k := range nested {
		fmt.Fprintf(w, "%s%s:\n", indent, k)
		kv(w, m[k], indent+"  ")
	}
}
