// Package webadmin is xmppd's web admin page (GET /admin/ on the node's HTTP
// listener): a read-only HTML page, no JavaScript, showing the node's status,
// cluster members, sessions, storage and tables, VIPs, DNS publishing and the
// recent warnings. Every section is the result of an admin command (the same
// ones xmppctl runs), called in-process, so a feature that registers an admin
// command shows up here without editing this package.
//
// Access: HTTP basic authentication against xmppd's accounts, for the accounts
// listed in the admins setting only, over TLS (or from a loopback client when
// the listener is plain HTTP).
//
// It must not import other xmppd packages but metrics (the warning records).
package webadmin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"xedge/xmppd/metrics"
)

// Options wire the page to the server.
type Options struct {
	Domain, Node, Version string
	// Admins are the accounts (user or user@Domain) allowed in.
	Admins []string
	// Secure says the listener is TLS; otherwise only loopback clients may log in.
	Secure bool
	// Check verifies a password and returns the normalized user name.
	Check func(user, pass string) (string, bool, error)
	// Call runs an admin command; Commands lists the registered ones.
	Call     func(ctx context.Context, cmd string, args []string) (any, error)
	Commands func() []string
	// Recent returns the recent warnings and errors, newest first.
	Recent func() []metrics.Record
	Logger *slog.Logger
}

// Section is one part of the page: the first registered command among
// Commands is called with Args.
type Section struct {
	ID, Title string
	Commands  []string
	Args      []string
}

// Sections are the page's parts, in order.
var Sections = []Section{
	{"status", "Node", []string{"status"}, nil},
	{"members", "Cluster members", []string{"cluster"}, []string{"members"}},
	{"sessions", "Sessions", []string{"sessions"}, nil},
	{"storage", "Storage", []string{"storage"}, nil},
	{"tables", "Tables", []string{"tables"}, nil},
	{"vips", "Virtual IPs", []string{"vip"}, nil},
	{"dns", "DNS", []string{"dns"}, nil},
}

// Handler serves the page.
type Handler struct {
	o      Options
	admins map[string]bool
	log    *slog.Logger

	mu    sync.Mutex
	fails map[string][]time.Time // refused logins per client IP, within FailWindow
}

// Refused logins from one address: after FailMax within FailWindow the page
// answers 429 until the window has passed (as c2s throttles failed SASL).
const (
	FailMax    = 5
	FailWindow = time.Minute
)

// New returns the page's handler.
func New(o Options) *Handler {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	h := &Handler{o: o, admins: map[string]bool{}, log: o.Logger.With("component", "webadmin"), fails: map[string][]time.Time{}}
	for _, a := range o.Admins {
		local, dom, ok := strings.Cut(a, "@")
		if !ok || dom == o.Domain {
			h.admins[strings.ToLower(local)] = true
		}
	}
	return h
}

// ServeHTTP authenticates and renders the page.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	if r.URL.Path == "/admin" {
		http.Redirect(w, r, "/admin/", http.StatusMovedPermanently)
		return
	}
	if r.URL.Path != "/admin/" {
		http.NotFound(w, r)
		return
	}
	if !h.o.Secure && !loopback(r.RemoteAddr) {
		http.Error(w, "the web admin page needs TLS (http-tls: true) or a loopback client", http.StatusForbidden)
		return
	}
	if len(h.admins) == 0 {
		http.Error(w, "no administrators configured: set admins (e.g. --admins alice) to use the web admin page", http.StatusForbidden)
		return
	}
	ip := clientIP(r.RemoteAddr)
	if h.throttled(ip) {
		w.Header().Set("Retry-After", fmt.Sprint(int(FailWindow.Seconds())))
		http.Error(w, "too many refused logins from this address: try again later", http.StatusTooManyRequests)
		return
	}
	user, ok := h.auth(r)
	if !ok {
		if _, _, tried := r.BasicAuth(); tried {
			h.failed(ip)
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="xmppd `+h.o.Domain+`", charset="UTF-8"`)
		http.Error(w, "authentication required: an account listed in admins", http.StatusUnauthorized)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	page := h.collect(ctx, user)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := pageTmpl.Execute(w, page); err != nil {
		h.log.Warn("web admin page render failed", "err", err)
	}
}

func clientIP(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return remote
	}
	return host
}

// recent drops the failures of ip older than FailWindow and returns the rest.
func (h *Handler) recent(ip string, now time.Time) []time.Time {
	l := h.fails[ip]
	i := 0
	for i < len(l) && now.Sub(l[i]) >= FailWindow {
		i++
	}
	l = l[i:]
	if len(l) == 0 {
		delete(h.fails, ip)
	} else {
		h.fails[ip] = l
	}
	return l
}

func (h *Handler) throttled(ip string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.recent(ip, time.Now())) >= FailMax
}

func (h *Handler) failed(ip string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	if len(h.fails) > 10000 { // bound the table: forget everyone's old failures
		for k := range h.fails {
			h.recent(k, now)
		}
	}
	h.fails[ip] = append(h.recent(ip, now), now)
}

func loopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (h *Handler) auth(r *http.Request) (string, bool) {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "", false
	}
	if local, dom, found := strings.Cut(user, "@"); found && dom == h.o.Domain {
		user = local
	}
	norm, good, err := h.o.Check(user, pass)
	if err != nil {
		h.log.Warn("web admin: account lookup failed", "user", user, "err", err)
		return "", false
	}
	allowed := false
	for a := range h.admins { // constant-time per entry
		if subtle.ConstantTimeCompare([]byte(a), []byte(strings.ToLower(norm))) == 1 {
			allowed = true
		}
	}
	if !good || !allowed {
		h.log.Warn("web admin: login refused", "user", user, "remote", r.RemoteAddr, "admin", allowed)
		return "", false
	}
	return norm, true
}

type page struct {
	Domain, Node, Version, User, Generated string
	Sections                               []renderedSection
	Warnings                               []metrics.Record
}

type renderedSection struct {
	ID, Title, Command string
	Missing            bool
	Err                string
	Body               template.HTML
}

func (h *Handler) collect(ctx context.Context, user string) page {
	p := page{Domain: h.o.Domain, Node: h.o.Node, Version: h.o.Version, User: user, Generated: time.Now().UTC().Format(time.RFC3339)}
	have := map[string]bool{}
	for _, c := range h.o.Commands() {
		have[c] = true
	}
	for _, sec := range Sections {
		rs := renderedSection{ID: sec.ID, Title: sec.Title, Missing: true}
		for _, c := range sec.Commands {
			if !have[c] {
				continue
			}
			rs.Missing, rs.Command = false, strings.TrimSpace(c+" "+strings.Join(sec.Args, " "))
			res, err := h.o.Call(ctx, c, sec.Args)
			if err != nil {
				rs.Err = err.Error()
				break
			}
			rs.Body = render(res)
			break
		}
		p.Sections = append(p.Sections, rs)
	}
	if h.o.Recent != nil {
		p.Warnings = h.o.Recent()
		if len(p.Warnings) > 50 {
			p.Warnings = p.Warnings[:50]
		}
	}
	return p
}

// render turns a command's result into HTML: a list of objects becomes a
// table, an object a key/value table (nested objects nested), a list of
// values a list, anything else text. Everything is escaped.
func render(v any) template.HTML {
	b, err := json.Marshal(v)
	if err != nil {
		return template.HTML(template.HTMLEscapeString(fmt.Sprint(v)))
	}
	var x any
	_ = json.Unmarshal(b, &x)
	var sb strings.Builder
	renderValue(&sb, x)
	return template.HTML(sb.String())
}

func esc(s string) string { return template.HTMLEscapeString(s) }

func renderValue(sb *strings.Builder, v any) {
	switch x := v.(type) {
	case []any:
		if len(x) == 0 {
			sb.WriteString(`<p class="empty">none</p>`)
			return
		}
		var rows []map[string]any
		for _, e := range x {
			if m, ok := e.(map[string]any); ok {
				rows = append(rows, m)
			}
		}
		if len(rows) == len(x) {
			renderRows(sb, rows)
			return
		}
		sb.WriteString("<ul>")
		for _, e := range x {
			sb.WriteString("<li>" + esc(scalar(e)) + "</li>")
		}
		sb.WriteString("</ul>")
	case map[string]any:
		keys := sortedKeys(x)
		sb.WriteString(`<table class="kv">`)
		for _, k := range keys {
			sb.WriteString("<tr><th>" + esc(k) + "</th><td>")
			switch x[k].(type) {
			case map[string]any, []any:
				renderValue(sb, x[k])
			default:
				sb.WriteString(esc(scalar(x[k])))
			}
			sb.WriteString("</td></tr>")
		}
		sb.WriteString("</table>")
	default:
		sb.WriteString("<pre>" + esc(scalar(v)) + "</pre>")
	}
}

func renderRows(sb *strings.Builder, rows []map[string]any) {
	seen := map[string]bool{}
	var cols []string
	for _, r := range rows {
		for _, k := range sortedKeys(r) {
			if !seen[k] {
				seen[k] = true
				cols = append(cols, k)
			}
		}
	}
	// The identifying columns first, as xmppctl shows them.
	sort.SliceStable(cols, func(i, j int) bool { return rank(cols[i]) < rank(cols[j]) })
	sb.WriteString("<table><tr>")
	for _, c := range cols {
		sb.WriteString("<th>" + esc(c) + "</th>")
	}
	sb.WriteString("</tr>")
	for _, r := range rows {
		sb.WriteString("<tr>")
		for _, c := range cols {
			sb.WriteString("<td>" + esc(scalar(r[c])) + "</td>")
		}
		sb.WriteString("</tr>")
	}
	sb.WriteString("</table>")
}

func rank(col string) int {
	for i, c := range []string{"jid", "node", "name", "addr", "vip", "address", "holder", "state"} {
		if col == c {
			return i
		}
	}
	return 100
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func scalar(v any) string {
	switch x := v.(type) {
	case nil:
		return "-"
	case string:
		if x == "" {
			return "-"
		}
		return x
	case float64:
		// JSON numbers arrive as float64: no exponent (fmt's %v would show a DNS
		// serial, an applied index or a byte count from 1e6 up as 1.7965e+09).
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		if x {
			return "yes"
		}
		return "no"
	case map[string]any:
		var parts []string
		for _, k := range sortedKeys(x) {
			parts = append(parts, k+"="+scalar(x[k]))
		}
		return strings.Join(parts, ", ")
	case []any:
		var parts []string
		for _, e := range x {
			parts = append(parts, scalar(e))
		}
		return strings.Join(parts, ", ")
	}
	return fmt.Sprint(v)
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>xmppd {{.Node}} — {{.Domain}}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.2em 0}th,td{border:1px solid #ddd;padding:2px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}table.kv th{width:12em}.empty,.missing{color:#777}.err{color:#a00}
.warn{background:#fff6e0}.error{background:#fde8e8}nav a{margin-right:1em}
</style></head><body>
<h1>xmppd node {{.Node}}</h1>
<p>domain <b>{{.Domain}}</b> · version {{.Version}} · signed in as {{.User}} · generated {{.Generated}}</p>
<nav>{{range .Sections}}<a href="#{{.ID}}">{{.Title}}</a>{{end}}<a href="#warnings">Recent warnings</a></nav>
{{range .Sections}}<section id="{{.ID}}"><h2>{{.Title}}</h2>
{{if .Missing}}<p class="missing">not available on this node</p>
{{else if .Err}}<p class="err">{{.Command}}: {{.Err}}</p>
{{else}}{{.Body}}{{end}}</section>
{{end}}
<section id="warnings"><h2>Recent warnings</h2>
{{if .Warnings}}<table><tr><th>time</th><th>level</th><th>message</th><th>details</th></tr>
{{range .Warnings}}<tr class="{{if eq .Level "ERROR"}}error{{else}}warn{{end}}"><td>{{.Time.UTC.Format "2006-01-02 15:04:05"}}</td><td>{{.Level}}</td><td>{{.Message}}</td><td>{{.Attrs}}</td></tr>
{{end}}</table>{{else}}<p class="empty">none</p>{{end}}</section>
</body></html>
`))
