package dns

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
)

// TSIGKey is a TSIG key as tsig-keygen writes it.
type TSIGKey struct {
	Name      string // canonical FQDN
	Algorithm string // e.g. hmac-sha256.
	Secret    string // base64
}

var (
	keyNameRe = regexp.MustCompile(`key\s+"?([^"\s{]+)"?\s*\{`)
	keyAlgRe  = regexp.MustCompile(`algorithm\s+"?([A-Za-z0-9-]+)"?\s*;`)
	keySecRe  = regexp.MustCompile(`secret\s+"([^"]+)"\s*;`)
)

// ParseKey reads a key in BIND's syntax (the output of `tsig-keygen NAME`):
//
//	key "NAME" { algorithm hmac-sha256; secret "BASE64"; };
func ParseKey(text string) (TSIGKey, error) {
	n, a, s := keyNameRe.FindStringSubmatch(text), keyAlgRe.FindStringSubmatch(text), keySecRe.FindStringSubmatch(text)
	if n == nil || a == nil || s == nil {
		return TSIGKey{}, errors.New(`tsig key: want key "NAME" { algorithm hmac-sha256; secret "BASE64"; }; (as tsig-keygen writes)`)
	}
	k := TSIGKey{Name: canon(n[1]), Algorithm: canon(strings.ToLower(a[1])), Secret: s[1]}
	switch k.Algorithm {
	case mdns.HmacSHA256, mdns.HmacSHA384, mdns.HmacSHA512, mdns.HmacSHA224, mdns.HmacSHA1:
	default:
		return TSIGKey{}, fmt.Errorf("tsig key %s: algorithm %s not supported (use hmac-sha256)", k.Name, strings.TrimSuffix(k.Algorithm, "."))
	}
	return k, nil
}

// LoadKeyFile reads a key file written by tsig-keygen.
func LoadKeyFile(path string) (TSIGKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return TSIGKey{}, fmt.Errorf("tsig key: %w", err)
	}
	k, err := ParseKey(string(b))
	if err != nil {
		return TSIGKey{}, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// PusherConfig says where and what to update.
type PusherConfig struct {
	Server      string        // the primary's host:port
	Zone        string        // the zone to update
	Key         TSIGKey       // TSIG key (hmac-sha256)
	Timeout     time.Duration // per exchange; default 2s
	Domain      string        // the XMPP domain (the SRV owners live under it)
	DomainAddrs bool          // we own the domain's A/AAAA too
	HostSuffix  []string      // host names under these suffixes are ours (node.<zone>, vip.<zone>)
}

// Pusher brings a primary server's records for the names we own into line with
// the cluster view by RFC 2136 updates signed with TSIG. It owns: the three
// SRV RRsets of the domain, A/AAAA of host names under HostSuffix, and, with
// DomainAddrs, the domain's A/AAAA. Everything else in the zone is left alone.
type Pusher struct {
	cfg   PusherConfig
	known map[string]bool // host names pushed before (to delete when they go)
}

// NewPusher returns a pusher for cfg.
func NewPusher(cfg PusherConfig) *Pusher {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	cfg.Zone, cfg.Domain = canon(cfg.Zone), canon(cfg.Domain)
	for i := range cfg.HostSuffix {
		cfg.HostSuffix[i] = canon(cfg.HostSuffix[i])
	}
	return &Pusher{cfg: cfg, known: map[string]bool{}}
}

// Check reports settings that cannot work: the names the pusher owns must lie
// in the zone it updates.
func (c PusherConfig) Check() error {
	zone := canon(c.Zone)
	var errs []error
	if !mdns.IsSubDomain(zone, canon(c.Domain)) {
		errs = append(errs, fmt.Errorf("update zone %s does not contain the domain %s (its SRV records)", zone, canon(c.Domain)))
	}
	for _, h := range c.HostSuffix {
		if !mdns.IsSubDomain(zone, canon(h)) {
			errs = append(errs, fmt.Errorf("update zone %s does not contain the host names under %s", zone, canon(h)))
		}
	}
	if c.Key.Name == "" || c.Key.Secret == "" {
		errs = append(errs, errors.New("no TSIG key"))
	}
	return errors.Join(errs...)
}

// Config returns the pusher's settings.
func (p *Pusher) Config() PusherConfig { return p.cfg }

// PushReport says what one Reconcile did.
type PushReport struct {
	Changed  []string      `json:"changed,omitempty"` // "name type" of RRsets replaced or deleted
	InSync   bool          `json:"in_sync"`           // the server already had the records
	Verified bool          `json:"verified"`          // a follow-up query saw the change
	Took     time.Duration `json:"took"`
}

type rrKey struct {
	name string
	t    uint16
}

func (k rrKey) String() string { return k.name + " " + mdns.TypeToString[k.t] }

// ErrNotApplied is returned when the server accepted an update but a follow-up
// query does not show it (PowerDNS, for one, answers NOERROR and ignores
// updates unless they are enabled for the zone).
var ErrNotApplied = errors.New("update accepted but not applied")

// ErrConcurrent is returned when the follow-up query shows other records than
// pushed while the zone's serial moved: another writer (a deposed leader for a
// moment, or an operator) changed them at the same time. The push is retried.
var ErrConcurrent = errors.New("records changed by another writer during the update")

func (p *Pusher) owned(name string) bool {
	for _, s := range p.cfg.HostSuffix {
		if mdns.IsSubDomain(s, name) && name != s {
			return true
		}
	}
	return false
}

// Reconcile makes the server hold exactly want for the names the pusher owns:
// it reads the current RRsets, sends one atomic update replacing those that
// differ and deleting those of hosts no longer wanted, then queries again to
// check the update took effect.
func (p *Pusher) Reconcile(ctx context.Context, want []mdns.RR) (PushReport, error) {
	start := time.Now()
	var rep PushReport
	wantSets := map[rrKey][]mdns.RR{}
	for _, rr := range want {
		h := rr.Header()
		switch h.Rrtype {
		case mdns.TypeSRV, mdns.TypeA, mdns.TypeAAAA:
		default:
			continue // SOA and NS belong to the primary
		}
		name := canon(h.Name)
		if !mdns.IsSubDomain(p.cfg.Zone, name) {
			continue
		}
		if (h.Rrtype == mdns.TypeA || h.Rrtype == mdns.TypeAAAA) && !(p.owned(name) || (p.cfg.DomainAddrs && name == p.cfg.Domain)) {
			continue
		}
		k := rrKey{name, h.Rrtype}
		wantSets[k] = append(wantSets[k], mdns.Copy(rr)) // Insert rewrites headers: never touch the caller's
	}

	c := &mdns.Client{Net: "tcp", Timeout: p.cfg.Timeout, TsigSecret: map[string]string{p.cfg.Key.Name: p.cfg.Key.Secret}}
	ctx, cancel := context.WithTimeout(ctx, 4*p.cfg.Timeout)
	defer cancel()
	conn, err := c.DialContext(ctx, p.cfg.Server)
	if err != nil {
		return rep, fmt.Errorf("dial %s: %w", p.cfg.Server, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	have := map[rrKey][]mdns.RR{}
	read := func(k rrKey) error {
		if _, done := have[k]; done {
			return nil
		}
		rrs, err := p.query(ctx, c, conn, k)
		if err != nil {
			return err
		}
		have[k] = rrs
		return nil
	}

	// The keys to look at: the SRV owners, every wanted RRset, and the A/AAAA
	// of every host we own that the server's SRV records, or we before, named.
	hosts := map[string]bool{}
	for h := range p.known {
		hosts[h] = true
	}
	keys := map[rrKey]bool{}
	for _, svc := range []string{SvcClient, SvcClientTLS, SvcServer} {
		k := rrKey{svc + "." + p.cfg.Domain, mdns.TypeSRV}
		keys[k] = true
		if err := read(k); err != nil {
			return rep, err
		}
		for _, rr := range have[k] {
			if t := canon(rr.(*mdns.SRV).Target); p.owned(t) {
				hosts[t] = true
			}
		}
	}
	if p.cfg.DomainAddrs {
		hosts[p.cfg.Domain] = true
	}
	for k := range wantSets {
		keys[k] = true
	}
	for h := range hosts {
		keys[rrKey{h, mdns.TypeA}] = true
		keys[rrKey{h, mdns.TypeAAAA}] = true
	}
	var changed []rrKey
	for k := range keys {
		if err := read(k); err != nil {
			return rep, err
		}
		if !sameSet(have[k], wantSets[k]) {
			changed = append(changed, k)
		}
	}
	sort.Slice(changed, func(i, j int) bool { return changed[i].String() < changed[j].String() })
	for _, k := range changed {
		rep.Changed = append(rep.Changed, k.String())
	}
	newKnown := map[string]bool{}
	for k := range wantSets {
		if k.t != mdns.TypeSRV && p.owned(k.name) {
			newKnown[k.name] = true
		}
	}
	if len(changed) == 0 {
		rep.InSync, rep.Verified, rep.Took = true, true, time.Since(start)
		p.known = newKnown
		return rep, nil
	}

	serial0, err := p.serial(ctx, c, conn)
	if err != nil {
		return rep, err
	}
	m := new(mdns.Msg)
	m.SetUpdate(p.cfg.Zone)
	for _, k := range changed {
		if len(have[k]) > 0 {
			m.RemoveRRset([]mdns.RR{&mdns.ANY{Hdr: mdns.RR_Header{Name: k.name, Rrtype: k.t, Class: mdns.ClassINET}}})
		}
		if w := wantSets[k]; len(w) > 0 {
			m.Insert(w)
		}
	}
	m.SetTsig(p.cfg.Key.Name, p.cfg.Key.Algorithm, 300, time.Now().Unix())
	r, _, err := c.ExchangeWithConnContext(ctx, m, conn)
	if err != nil {
		hint := ""
		if errors.Is(err, mdns.ErrAuth) || errors.Is(err, mdns.ErrSig) || errors.Is(err, mdns.ErrTime) {
			hint = fmt.Sprintf(" (TSIG rejected: the server does not know key %s with this secret, or the clocks differ by more than 5 minutes)", p.cfg.Key.Name)
		}
		return rep, fmt.Errorf("update %s at %s: %w%s", p.cfg.Zone, p.cfg.Server, err, hint)
	}
	if r.Rcode != mdns.RcodeSuccess {
		return rep, fmt.Errorf("update %s at %s refused: %s%s", p.cfg.Zone, p.cfg.Server, mdns.RcodeToString[r.Rcode], rcodeHint(r.Rcode))
	}
	// Check it took effect: PowerDNS answers NOERROR and ignores updates
	// unless they are enabled for the zone.
	for _, k := range changed {
		delete(have, k)
		if err := read(k); err != nil {
			return rep, fmt.Errorf("checking the update: %w", err)
		}
		if !sameSet(have[k], wantSets[k]) {
			// Ignored (the serial stayed), or applied and changed again by
			// another writer at the same moment (the serial moved)?
			if serial1, err := p.serial(ctx, c, conn); err == nil && serial1 != serial0 {
				return rep, fmt.Errorf("%w: %s at %s moved from serial %d to %d but %s reads %s", ErrConcurrent,
					p.cfg.Zone, p.cfg.Server, serial0, serial1, k, setText(have[k]))
			}
			return rep, fmt.Errorf("%w: %s at %s answers NOERROR but %s still reads %s and the serial stayed %d (is dynamic update enabled for the zone? PowerDNS ignores updates unless dnsupdate=yes and the zone allows this key)",
				ErrNotApplied, p.cfg.Zone, p.cfg.Server, k, setText(have[k]), serial0)
		}
	}
	p.known = newKnown
	rep.Verified, rep.Took = true, time.Since(start)
	return rep, nil
}

func rcodeHint(rc int) string {
	switch rc {
	case mdns.RcodeRefused:
		return " (does the zone's update-policy/allow-update grant this TSIG key?)"
	case mdns.RcodeNotAuth:
		return " (the TSIG key is unknown to the server or its secret differs, or the server is not authoritative)"
	case mdns.RcodeNotZone, mdns.RcodeServerFailure:
		return " (is the server the primary for the zone?)"
	case mdns.RcodeNotImplemented:
		return " (the server does not accept dynamic updates)"
	}
	return ""
}

// query reads one RRset from the primary (not recursive; it must answer
// authoritatively).
func (p *Pusher) query(ctx context.Context, c *mdns.Client, conn *mdns.Conn, k rrKey) ([]mdns.RR, error) {
	q := new(mdns.Msg)
	q.SetQuestion(k.name, k.t)
	q.RecursionDesired = false
	r, _, err := c.ExchangeWithConnContext(ctx, q, conn)
	if err != nil {
		return nil, fmt.Errorf("query %s at %s: %w", k, p.cfg.Server, err)
	}
	if r.Rcode != mdns.RcodeSuccess && r.Rcode != mdns.RcodeNameError {
		return nil, fmt.Errorf("query %s at %s: %s", k, p.cfg.Server, mdns.RcodeToString[r.Rcode])
	}
	if !r.Authoritative {
		return nil, fmt.Errorf("query %s at %s: answer is not authoritative (is it the primary for %s?)", k, p.cfg.Server, p.cfg.Zone)
	}
	var out []mdns.RR
	for _, rr := range r.Answer {
		if h := rr.Header(); canon(h.Name) == k.name && h.Rrtype == k.t {
			out = append(out, rr)
		}
	}
	return out, nil
}

// serial reads the zone's SOA serial from the primary.
func (p *Pusher) serial(ctx context.Context, c *mdns.Client, conn *mdns.Conn) (uint32, error) {
	rrs, err := p.query(ctx, c, conn, rrKey{p.cfg.Zone, mdns.TypeSOA})
	if err != nil {
		return 0, err
	}
	if len(rrs) != 1 {
		return 0, fmt.Errorf("query %s SOA at %s: %d records (is it the primary for the zone?)", p.cfg.Zone, p.cfg.Server, len(rrs))
	}
	return rrs[0].(*mdns.SOA).Serial, nil
}

// setText is an RRset's canonical text: names lowercased, sorted.
func setText(rrs []mdns.RR) string {
	var s []string
	for _, rr := range rrs {
		c := mdns.Copy(rr)
		c.Header().Name = canon(c.Header().Name)
		if srv, ok := c.(*mdns.SRV); ok {
			srv.Target = canon(srv.Target)
		}
		s = append(s, c.String())
	}
	sort.Strings(s)
	if len(s) == 0 {
		return "nothing"
	}
	return strings.Join(s, "; ")
}

func sameSet(a, b []mdns.RR) bool {
	if len(a) != len(b) {
		return false
	}
	return setText(a) == setText(b)
}
