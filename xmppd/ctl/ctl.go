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
	{"register", "USER [HOST] PASSWORD", "create an account (USER may be user@host; HOST as in ejabberdctl: a served domain, default the default host)", 2, 3},
	{"unregister", "USER [HOST]", "delete an account and its data", 1, 2},
	{"passwd", "USER [HOST] PASSWORD", "change an account's password", 2, 3},
	{"users", "[HOST]", "list accounts (of HOST; without: every host's, user@host outside the default host)", 0, 1},
	{"sessions", "", "list connected sessions", 0, 0},
	{"kick", "JID", "disconnect a session (full JID) or all of a user's (bare JID)", 1, 1},
	{"status", "", "version, uptime, domain, listeners, sessions, storage", 0, 0},
	{"loglevel", "[get|set LEVEL]", "show or change the log level (debug, info, warn, error)", 0, 2},
	{"tables", "", "list storage tables", 0, 0},
	{"storage", "", "show storage status", 0, 0},
	// ejabberdctl's names, so its operators' scripts keep working.
	{"change_password", "USER HOST NEWPASS", "change an account's password (ejabberdctl form of passwd)", 3, 3},
	{"registered_users", "HOST", "list HOST's accounts, one per line (ejabberdctl form of users)", 1, 1},
	{"registered_vhosts", "", "list the served domains (virtual hosts), one per line", 0, 0},
	{"vhosts", "", "each served domain: sessions, auth method, registration, MUC and upload services", 0, 0},
	{"connected_users_vhost", "HOST", "list the full JIDs of HOST's connected sessions, one per line", 1, 1},
	{"stats_host", "registeredusers|onlineusers HOST", "one number for one host, as ejabberdctl stats_host", 2, 2},
	{"muc_online_rooms", "SERVICE|global", "list the rooms of a MUC service (conference.HOST) or of all, one JID per line", 1, 1},
	{"connected_users", "", "list the full JIDs of connected sessions, one per line", 0, 0},
	{"connected_users_number", "", "number of connected sessions", 0, 0},
	{"user_sessions_info", "USER HOST", "sessions of one account", 2, 2},
	{"kick_session", "USER HOST RESOURCE [REASON]", "disconnect one session with a reason", 3, 4},
	{"check_account", "USER [HOST]", "exit 0 if the account exists, 1 if not", 1, 2},
	{"check_password", "USER [HOST] PASSWORD", "exit 0 if the password matches, 1 if not", 2, 3},
	{"stats", "registeredusers|onlineusers|onlineusersnode|uptimeseconds [HOST]", "one number (every host, or HOST), as ejabberdctl stats", 1, 2},
	{"set_loglevel", "LEVEL", "set the log level (debug, info, warn, error)", 1, 1},
	{"mnesia", "[info]", "storage status and every table with its replicas (like ejabberdctl mnesia info)", 0, 1},
	{"kick_user", "USER HOST", "disconnect every session of an account (ejabberdctl form of kick USER@HOST)", 2, 2},
	{"list_cluster", "", "cluster members (ejabberdctl form of cluster members)", 0, 0},
	{"join_cluster", "NODE", "ejabberdctl's join_cluster: explains how a node joins (start it with --join)", 1, 1},
	{"leave_cluster", "", "leave the cluster (ejabberdctl form of cluster leave; this node only)", 0, 0},
}

// translate maps ejabberdctl commands that are another xmppctl command with
// other arguments to that command (sent to xmppd and rendered as it).
var translate = map[string]func(args []string) (string, []string){
	"kick_user":     func(a []string) (string, []string) { return "kick", []string{a[0] + "@" + a[1]} },
	"list_cluster":  func([]string) (string, []string) { return "cluster", []string{"members"} },
	"join_cluster":  func(a []string) (string, []string) { return "cluster", []string{"join", a[0]} },
	"leave_cluster": func([]string) (string, []string) { return "cluster", []string{"leave"} },
}

// details is the longer text `xmppctl help COMMAND` prints after the usage.
var details = map[string]string{
	"register": "Examples:\n  xmppctl register alice secret                 (the default host)\n  xmppctl register alice@b.example secret\n  xmppctl register alice b.example secret       (ejabberdctl form)\n" +
		"alice@a.example and alice@b.example are different accounts. HOST must be a served domain (xmppctl registered_vhosts).\n" +
		"Only salted SCRAM-SHA-1/-256 keys are stored, never the password.",
	"unregister": "Deletes the account, purges its roster, vCard, private and offline data, and disconnects its sessions.\n" +
		"  xmppctl unregister alice | xmppctl unregister alice example.org",
	"passwd":                "Same as change_password. Existing sessions stay connected.",
	"change_password":       "ejabberdctl change_password USER HOST NEWPASS; the same as passwd USER NEWPASS.",
	"users":                 "With HOST (ejabberdctl registered_users HOST): that host's accounts by name. Without: every host's, the default host's\nby name and the others' as user@host.",
	"registered_users":      "One account name per line, as ejabberdctl prints them.",
	"connected_users":       "One full JID per line (user@domain/resource), as ejabberdctl prints them.",
	"kick":                  "  xmppctl kick alice@example.org/phone   one session\n  xmppctl kick alice@example.org         every session of alice",
	"kick_session":          "ejabberdctl kick_session USER HOST RESOURCE REASON: the client sees the reason in the stream error text.",
	"check_account":         "Exit status 0 when the account exists, 1 when it does not (for scripts).",
	"check_password":        "Exit status 0 when the password matches, 1 otherwise (for scripts).",
	"stats":                 "  registeredusers   accounts\n  onlineusers       sessions on this node (onlineusersnode: the same)\n  uptimeseconds     seconds since xmppd started\nWith HOST, only that host's accounts or sessions.",
	"stats_host":            "ejabberdctl stats_host registeredusers|onlineusers HOST: the same as stats with HOST.",
	"registered_vhosts":     "The domains this cluster serves (hosts:, the default host first), as ejabberdctl registered_vhosts.",
	"connected_users_vhost": "ejabberdctl connected_users_vhost HOST: one full JID per line, sessions of HOST's users on this node.",
	"status":                "Exit status 0 when xmppd answers, 3 when it is not running (as ejabberdctl status).",
	"tables":                "Like mnesia:info: each table, kind, copy type (disc/ram/node), keys, bytes, replica state per node.",
	"mnesia":                "What ejabberd operators read from `ejabberdctl mnesia info`: the storage (mode, leader, role, lag) and the tables.",
	"kick_user":             "ejabberdctl kick_user USER HOST: every session of the account, as xmppctl kick USER@HOST.",
	"list_cluster":          "ejabberdctl list_cluster: the members as xmppctl cluster members shows them (node, address, state, storage role).",
	"join_cluster": "There is no join of a running node: start a new node with --join ADDR of any member (or let discovery find the cluster);\n" +
		"it joins as a fresh member, with no shared schema and no cookie.",
	"leave_cluster": "This node leaves the cluster (its sessions are moved first), as xmppctl cluster leave. ejabberdctl's form naming\n" +
		"another node is xmppctl cluster forget NODE for a dead node.",
	"help":       "  xmppctl help            every command\n  xmppctl help COMMAND    one command's usage and details",
	"completion": "  source <(xmppctl completion bash)\nor save it as /etc/bash_completion.d/xmppctl.",
}

// local are the commands xmppctl answers itself, without xmppd.
var local = []Command{
	{"help", "[COMMAND]", "list the commands, or show one command's usage and details", 0, 1},
	{"completion", "bash", "print the bash completion script", 1, 1},
}

// Renderer prints a command's decoded JSON result for humans.
type Renderer func(w io.Writer, args []string, v any) error

// renderers are the human renderings of commands declared in their own files.
var renderers = map[string]Renderer{}

// clients are commands with a client side of their own (several requests, output
// while they run, e.g. an import's progress), declared in their own files with
// registerClient. They get the socket and no overall timeout.
var clients = map[string]func(ctx context.Context, socket string, args []string, asJSON bool, stdout, stderr io.Writer) int{}

// registerClient adds a command whose client side is fn.
func registerClient(c Command, fn func(ctx context.Context, socket string, args []string, asJSON bool, stdout, stderr io.Writer) int) {
	commands = append(commands, c)
	clients[c.Name] = fn
}

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

// Lookup returns the command named name (xmppd's or xmppctl's own).
func Lookup(name string) (Command, bool) {
	for _, c := range append(commands, local...) {
		if c.Name == name {
			return c, true
		}
	}
	return Command{}, false
}

func isLocal(name string) bool {
	for _, c := range local {
		if c.Name == name {
			return true
		}
	}
	return false
}

// Usage writes the usage text.
func Usage(w io.Writer) {
	fmt.Fprintln(w, "usage: xmppctl [--socket PATH] [--json] COMMAND [ARGS]")
	fmt.Fprintln(w, "commands:")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, c := range append(Commands(), local...) {
		fmt.Fprintf(tw, "  %s %s\t%s\n", c.Name, c.Usage, c.Summary)
	}
	tw.Flush()
	fmt.Fprintln(w, "`xmppctl help COMMAND` shows one command; ejabberdctl's forms (USER HOST ...) are accepted.")
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
	if isLocal(cmd.Name) {
		return runLocal(cmd.Name, cargs, *asJSON, stdout, stderr)
	}
	if socket == "" {
		socket = DefaultSocket
	}
	if run := clients[cmd.Name]; run != nil {
		return run(ctx, socket, cargs, *asJSON, stdout, stderr)
	}
	name := cmd.Name
	if tr := translate[name]; tr != nil {
		name, cargs = tr(cargs)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	resp, err := admin.Call(ctx, socket, admin.Request{Cmd: name, Args: cargs})
	if err != nil {
		fmt.Fprintf(stderr, "xmppctl: %s\n", explain(socket, err))
		return 3
	}
	if !resp.OK {
		if name == "cluster" && resp.Error == `unknown command "cluster"` {
			resp.Error = "this node is not clustered (it runs without --cluster-addr)"
		}
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
	if err := render(stdout, name, cargs, resp.Result); err != nil {
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
	case "users", "registered_users", "connected_users", "connected_users_vhost", "registered_vhosts", "muc_online_rooms":
		for _, u := range asList(v) {
			fmt.Fprintln(w, u)
		}
	case "sessions", "user_sessions_info":
		table(w, asMaps(v), "jid", "addr", "tls", "mechanism", "priority", "sm", "csi", "detached", "since")
	case "mnesia":
		m, _ := v.(map[string]any)
		fmt.Fprintln(w, "storage:")
		kv(w, m["storage"], "  ")
		fmt.Fprintln(w, "tables:")
		table(w, asMaps(m["tables"]), "name", "kind", "copy", "keys", "bytes", "ram", "replicas")
	case "tables":
		// Like mnesia:info: each table, its copy type, size and the state of
		// its replica on every node (node=state, sorted by node). RAM: for a
		// ram table of a cluster, whether this node's copy is synced; a
		// replica whose RAM tables are being resynced shows "/unsynced".
		table(w, asMaps(v), "name", "kind", "copy", "keys", "bytes", "ram", "replicas")
	case "status":
		// ejabberdctl status's two lines first, for the scripts that grep them.
		if m, ok := v.(map[string]any); ok {
			fmt.Fprintf(w, "The node %s is started with status: started\nxmppd %s is running in that node\n", cell(m["node"]), cell(m["version"]))
		}
		kv(w, v, "")
	case "storage":
		kv(w, v, "")
	case "vhosts":
		table(w, asMaps(v), "host", "default", "sessions", "auth", "register", "muc", "upload")
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
