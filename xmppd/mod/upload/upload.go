// Package upload implements HTTP file upload (XEP-0363, urn:xmpp:http:upload:0):
// the upload service (upload.DOMAIN by default) answers disco#info with its
// maximum file size and hands out slots, and an http.Handler mounted on the
// node's HTTP listener takes the PUT and serves the GET.
//
// A slot's PUT URL carries its owner, size, content type and expiry signed with
// an HMAC key every node derives from the cluster key (or a node key), so any
// node verifies a PUT whatever node issued the slot; the GET URL holds a
// 128-bit random id. Files live in an operator-chosen directory, one
// subdirectory per upload holding the file and a small JSON record (owner,
// size, content type, time); a bounded background sweep removes expired ones.
// Quotas are counted from those records (rebuilt at start and at every sweep,
// kept up to date by this node's uploads).
//
// It must not import the xmppd core or other modules.
package upload

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"xedge/xmppd/jid"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// Namespaces.
const (
	NS        = "urn:xmpp:http:upload:0"
	nsInfo    = "http://jabber.org/protocol/disco#info"
	nsItems   = "http://jabber.org/protocol/disco#items"
	nsData    = "jabber:x:data"
	metaName  = "meta.json"
	slotValid = 5 * time.Minute // a PUT URL is accepted this long after the slot
	// Path is the URL prefix of uploaded files.
	Path = "/upload/"
	// MaxSweep bounds how many upload directories one expiry sweep examines.
	MaxSweep = 100000
)

// Config configures the service.
type Config struct {
	Domain  string // the XMPP domain whose users may upload
	Service string // the service JID (upload.DOMAIN)
	// Services are more upload services, each with the domain whose users may
	// use it (virtual hosts: upload.b.example -> b.example, as ejabberd's
	// mod_http_upload per vhost with access local). One directory, one key and
	// one HTTP handler serve them all; quotas count per user (bare JID).
	Services map[string]string
	Dir      string
	MaxSize  int64
	Quota    int64         // per user, bytes (0: none)
	Expire   time.Duration // 0: keep
	BaseURL  func() string // public base URL of the HTTP listener (no trailing slash)
	Key      []byte        // HMAC key
	Logger   *slog.Logger
}

// Service is the upload module and HTTP handler.
type Service struct {
	cfg  Config
	svcs map[string]string // service JID -> the domain whose users may use it
	log  *slog.Logger
	now  func() time.Time

	mu    sync.Mutex
	usage map[string]int64 // bare JID -> bytes stored

	cancel context.CancelFunc
	done   chan struct{}
}

type meta struct {
	Owner       string    `json:"owner"`
	Name        string    `json:"name"`
	Size        int64     `json:"size"`
	ContentType string    `json:"content_type"`
	Created     time.Time `json:"created"`
}

// New returns the service.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	svcs := map[string]string{}
	for svc, d := range cfg.Services {
		svcs[svc] = d
	}
	if cfg.Service != "" {
		svcs[cfg.Service] = cfg.Domain
	}
	return &Service{cfg: cfg, svcs: svcs, log: cfg.Logger.With("component", "upload"), now: time.Now, usage: map[string]int64{}}
}

// Services lists the service JIDs served, sorted.
func (s *Service) Services() []string {
	out := make([]string, 0, len(s.svcs))
	for svc := range s.svcs {
		out = append(out, svc)
	}
	sort.Strings(out)
	return out
}

// Name implements module.Module.
func (*Service) Name() string { return "upload" }

// Start registers the service domain and starts the expiry sweep.
func (s *Service) Start(ctx context.Context, h module.Host) error {
	if err := os.MkdirAll(s.cfg.Dir, 0o750); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	dr, ok := h.(module.DomainRouter)
	if !ok {
		return errors.New("upload: the host routes no service domains")
	}
	for _, svc := range s.Services() {
		dr.HandleDomain(svc, func(ctx context.Context, st *xmlstream.Element, from, to jid.JID) {
			s.handle(ctx, h, st, from, to)
		})
	}
	s.sweep()
	sctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	go s.sweeper(sctx)
	return nil
}

// Stop ends the sweep.
func (s *Service) Stop(ctx context.Context) error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	select {
	case <-s.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

func (s *Service) sweeper(ctx context.Context) {
	defer close(s.done)
	every := time.Hour
	if s.cfg.Expire > 0 && s.cfg.Expire/10 < every {
		every = max(s.cfg.Expire/10, time.Second)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sweep()
		}
	}
}

// sweep removes expired uploads and recounts every user's usage (bounded by
// MaxSweep directories per run).
func (s *Service) sweep() {
	ents, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		s.log.Warn("upload sweep: cannot read the directory", "dir", s.cfg.Dir, "err", err)
		return
	}
	usage := map[string]int64{}
	removed := 0
	now := s.now()
	for i, e := range ents {
		if i >= MaxSweep {
			s.log.Warn("upload sweep: stopped at the per-run limit", "limit", MaxSweep)
			break
		}
		if !e.IsDir() || !validID(e.Name()) {
			continue
		}
		m, err := s.readMeta(e.Name())
		if err != nil {
			continue // an upload in progress, or not ours
		}
		if s.cfg.Expire > 0 && now.Sub(m.Created) > s.cfg.Expire {
			if err := os.RemoveAll(filepath.Join(s.cfg.Dir, e.Name())); err == nil {
				removed++
			}
			continue
		}
		usage[m.Owner] += m.Size
	}
	s.mu.Lock()
	s.usage = usage
	s.mu.Unlock()
	if removed > 0 {
		s.log.Info("removed expired uploads", "count", removed)
	}
}

// Sweep runs one expiry sweep now (tests, xmppctl).
func (s *Service) Sweep() { s.sweep() }

func (s *Service) readMeta(id string) (meta, error) {
	var m meta
	b, err := os.ReadFile(filepath.Join(s.cfg.Dir, id, metaName))
	if err != nil {
		return m, err
	}
	err = json.Unmarshal(b, &m)
	return m, err
}

func validID(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

// handle answers a stanza addressed to the service.
func (s *Service) handle(ctx context.Context, h module.Host, st *xmlstream.Element, from, to jid.JID) {
	if st.Local != "iq" {
		return // messages and presence to the service are dropped
	}
	typ := st.Attr("type")
	if typ != "get" && typ != "set" {
		return
	}
	p := st.FirstChild()
	switch {
	case p == nil:
		h.Route(ctx, module.Error(st, module.ErrModify, "bad-request", ""))
	case typ == "get" && p.Space == nsInfo && p.Local == "query" && p.Attr("node") == "":
		h.Route(ctx, module.Result(st, s.info()))
	case typ == "get" && p.Space == nsItems && p.Local == "query":
		h.Route(ctx, module.Result(st, xmlstream.New(nsItems, "query")))
	case typ == "get" && p.Space == NS && p.Local == "request":
		h.Route(ctx, s.slot(st, p, from, to))
	default:
		h.Route(ctx, module.Error(st, module.ErrCancel, "service-unavailable", ""))
	}
}

func (s *Service) info() *xmlstream.Element {
	q := xmlstream.New(nsInfo, "query")
	q.Append(xmlstream.New(nsInfo, "identity", "category", "store", "type", "file", "name", "HTTP File Upload"))
	q.Append(xmlstream.New(nsInfo, "feature", "var", NS))
	x := xmlstream.New(nsData, "x", "type", "result")
	x.Append(xmlstream.New(nsData, "field", "var", "FORM_TYPE", "type", "hidden").Append(xmlstream.New(nsData, "value").AppendText(NS)))
	x.Append(xmlstream.New(nsData, "field", "var", "max-file-size").Append(xmlstream.New(nsData, "value").AppendText(strconv.FormatInt(s.cfg.MaxSize, 10))))
	q.Append(x)
	return q
}

// slot answers a slot request (XEP-0363 §4-§5) to the service to: only users
// of that service's domain get one.
func (s *Service) slot(st, req *xmlstream.Element, from, to jid.JID) *xmlstream.Element {
	if d := s.svcs[to.Domain]; from.Domain != d || from.Local == "" {
		return module.Error(st, module.ErrCancel, "not-allowed", "only users of "+d+" may upload")
	}
	name := cleanName(req.Attr("filename"))
	size, err := strconv.ParseInt(req.Attr("size"), 10, 64)
	if name == "" || err != nil || size < 0 {
		return module.Error(st, module.ErrModify, "bad-request", "a filename and a size in bytes are required")
	}
	if size > s.cfg.MaxSize {
		e := module.Error(st, module.ErrModify, "not-acceptable", "file too large")
		e.Child(st.Space, "error").Append(xmlstream.New(NS, "file-too-large").
			Append(xmlstream.New(NS, "max-file-size").AppendText(strconv.FormatInt(s.cfg.MaxSize, 10))))
		return e
	}
	owner := from.Bare().String()
	if s.cfg.Quota > 0 {
		s.mu.Lock()
		used := s.usage[owner]
		s.mu.Unlock()
		if used+size > s.cfg.Quota {
			return module.Error(st, module.ErrWait, "resource-constraint",
				fmt.Sprintf("upload quota exceeded: %d of %d bytes used", used, s.cfg.Quota))
		}
	}
	ctype := req.Attr("content-type")
	if ctype == "" || strings.ContainsAny(ctype, "\r\n") || len(ctype) > 255 {
		ctype = "application/octet-stream"
	}
	var rid [16]byte
	rand.Read(rid[:])
	id := hex.EncodeToString(rid[:])
	exp := s.now().Add(slotValid).Unix()
	base := strings.TrimRight(s.cfg.BaseURL(), "/") + Path + id + "/" + url.PathEscape(name)
	v := url.Values{}
	v.Set("exp", strconv.FormatInt(exp, 10))
	v.Set("size", strconv.FormatInt(size, 10))
	v.Set("owner", owner)
	v.Set("type", ctype)
	v.Set("mac", s.mac(id, name, owner, ctype, size, exp))
	sl := xmlstream.New(NS, "slot")
	sl.Append(xmlstream.New(NS, "put", "url", base+"?"+v.Encode()))
	sl.Append(xmlstream.New(NS, "get", "url", base))
	return module.Result(st, sl)
}

func (s *Service) mac(id, name, owner, ctype string, size, exp int64) string {
	m := hmac.New(sha256.New, s.cfg.Key)
	fmt.Fprintf(m, "%s\x00%s\x00%s\x00%s\x00%d\x00%d", id, name, owner, ctype, size, exp)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// cleanName keeps a file name usable in a URL path and a directory: no path
// separators, no control characters, at most 200 bytes.
func cleanName(n string) string {
	n = strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || unicode.IsControl(r) {
			return '_'
		}
		return r
	}, strings.TrimSpace(n))
	if n == "." || n == ".." || strings.HasPrefix(n, ".") {
		n = "_" + strings.TrimLeft(n, ".")
	}
	for len(n) > 200 {
		n = n[:len(n)-1]
	}
	return strings.ToValidUTF8(n, "_")
}

// ServeHTTP takes PUTs of slots and serves the stored files (GET, HEAD), with
// CORS headers for web clients (OPTIONS preflight).
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Access-Control-Allow-Origin", "*")
	hd.Set("Access-Control-Allow-Methods", "GET, HEAD, PUT, OPTIONS")
	hd.Set("Access-Control-Allow-Headers", "Content-Type")
	hd.Set("Access-Control-Max-Age", "86400")
	rest := strings.TrimPrefix(r.URL.Path, Path)
	id, name, ok := strings.Cut(rest, "/")
	if !ok || !validID(id) || name == "" || cleanName(name) != name {
		http.NotFound(w, r)
		return
	}
	switch r.Method {
	case http.MethodOptions:
		w.WriteHeader(http.StatusNoContent)
	case http.MethodPut:
		s.put(w, r, id, name)
	case http.MethodGet, http.MethodHead:
		s.get(w, r, id, name)
	default:
		hd.Set("Allow", "GET, HEAD, PUT, OPTIONS")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func (s *Service) put(w http.ResponseWriter, r *http.Request, id, name string) {
	q := r.URL.Query()
	exp, err1 := strconv.ParseInt(q.Get("exp"), 10, 64)
	size, err2 := strconv.ParseInt(q.Get("size"), 10, 64)
	owner, ctype := q.Get("owner"), q.Get("type")
	if err1 != nil || err2 != nil || !hmac.Equal([]byte(q.Get("mac")), []byte(s.mac(id, name, owner, ctype, size, exp))) {
		http.Error(w, "not a valid upload slot", http.StatusForbidden)
		return
	}
	if s.now().Unix() > exp {
		http.Error(w, "upload slot expired", http.StatusForbidden)
		return
	}
	if r.ContentLength != size {
		http.Error(w, fmt.Sprintf("Content-Length must be the slot's size, %d", size), http.StatusBadRequest)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && mediaType(ct) != mediaType(ctype) {
		http.Error(w, "Content-Type differs from the slot's", http.StatusBadRequest)
		return
	}
	if s.cfg.Quota > 0 {
		s.mu.Lock()
		over := s.usage[owner]+size > s.cfg.Quota
		s.mu.Unlock()
		if over {
			http.Error(w, "upload quota exceeded", http.StatusRequestEntityTooLarge)
			return
		}
	}
	dir := filepath.Join(s.cfg.Dir, id)
	if err := os.Mkdir(dir, 0o750); err != nil {
		if errors.Is(err, os.ErrExist) {
			http.Error(w, "already uploaded", http.StatusConflict)
			return
		}
		s.log.Warn("upload: cannot create the file's directory", "err", err)
		http.Error(w, "storage error", http.StatusInternalServerError)
		return
	}
	fail := func(code int, msg string) {
		os.RemoveAll(dir)
		http.Error(w, msg, code)
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		s.log.Warn("upload: cannot create the file", "err", err)
		fail(http.StatusInternalServerError, "storage error")
		return
	}
	n, err := io.Copy(f, io.LimitReader(r.Body, size+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil || n != size {
		fail(http.StatusBadRequest, "the body does not have the slot's size")
		return
	}
	b, _ := json.Marshal(meta{Owner: owner, Name: name, Size: size, ContentType: ctype, Created: s.now().UTC()})
	if err := os.WriteFile(filepath.Join(dir, metaName), b, 0o640); err != nil {
		s.log.Warn("upload: cannot write the record", "err", err)
		fail(http.StatusInternalServerError, "storage error")
		return
	}
	s.mu.Lock()
	s.usage[owner] += size
	s.mu.Unlock()
	s.log.Debug("file uploaded", "owner", owner, "size", size, "id", id)
	w.WriteHeader(http.StatusCreated)
}

func (s *Service) get(w http.ResponseWriter, r *http.Request, id, name string) {
	m, err := s.readMeta(id)
	if err != nil || m.Name != name {
		http.NotFound(w, r)
		return
	}
	f, err := os.Open(filepath.Join(s.cfg.Dir, id, name))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	hd := w.Header()
	hd.Set("Content-Type", m.ContentType)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Content-Security-Policy", "default-src 'none'; img-src 'self'; media-src 'self'; sandbox")
	hd.Set("Cache-Control", "public, max-age=31536000, immutable")
	http.ServeContent(w, r, "", m.Created, f)
}

func mediaType(ct string) string {
	if mt, _, err := mime.ParseMediaType(ct); err == nil {
		return mt
	}
	return strings.ToLower(strings.TrimSpace(ct))
}
