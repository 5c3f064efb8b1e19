package migrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"xedge/storage"
	"xedge/xmppd/accounts"
	"xedge/xmppd/internal/scram"
	"xedge/xmppd/jid"
	"xedge/xmppd/mod/blocking"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/mod/offline"
	"xedge/xmppd/mod/private"
	"xedge/xmppd/mod/roster"
	"xedge/xmppd/mod/vcard"
	"xedge/xmppd/piefxis"
	"xedge/xmppd/xmlstream"
)

// ImportOptions configure an import.
type ImportOptions struct {
	// Domain is the default host: its users are keyed by localpart, those of
	// the other Hosts by localpart@host (module.UserKey), so each host's users
	// stay apart.
	Domain string
	// Hosts are the served domains (Domain among them; empty: Domain alone).
	// A file naming a host not served is refused before anything is written,
	// as ejabberd's import_piefxis stops at an unknown host, unless
	// SkipUnknownHosts: then those users are skipped and counted (OtherHosts).
	Hosts            []string
	SkipUnknownHosts bool
	// Iterations is the PBKDF2 count for keys derived from plaintext passwords
	// (default scram.DefaultIterations, what registration uses).
	Iterations int
	// BatchRows bounds one storage batch (default 20,000 rows).
	BatchRows int
	// Workers convert users in parallel (plaintext passwords cost two PBKDF2
	// derivations each); default GOMAXPROCS.
	Workers int
}

// pendingRow is roster_pending's stored form (see package roster).
type pendingRow struct {
	Status string `json:"status,omitempty"`
	Stamp  string `json:"stamp,omitempty"`
}

func isUnavailable(err error) bool { return errors.Is(err, storage.ErrUnavailable) }

// hostUser is a user read from the file with its host.
type hostUser struct {
	host string
	u    *piefxis.User
}

// served returns the served domain host names (prepared), or "" if it is not served.
func (o *ImportOptions) served(host string) string {
	d := strings.ToLower(strings.TrimSuffix(host, "."))
	if j, err := jid.New("", d, ""); err == nil {
		d = j.Domain
	}
	if d == strings.ToLower(o.Domain) {
		return o.Domain
	}
	for _, h := range o.Hosts {
		if d == h {
			return h
		}
	}
	return ""
}

// checkHosts refuses, before anything is written, a file naming a host not
// served (unless SkipUnknownHosts).
func (o *ImportOptions) checkHosts(files []string, prosody bool) error {
	if o.SkipUnknownHosts {
		return nil
	}
	var unknown []string
	seen := map[string]bool{}
	for _, f := range files {
		var hosts []string
		if prosody { // USER@HOST.xml
			_, h, _ := strings.Cut(strings.TrimSuffix(filepath.Base(f), ".xml"), "@")
			hosts = []string{h}
		} else {
			var err error
			if hosts, err = piefxis.FileHosts(f); err != nil {
				return err
			}
		}
		for _, h := range hosts {
			if o.served(h) == "" && !seen[h] {
				seen[h] = true
				unknown = append(unknown, h)
			}
		}
	}
	if len(unknown) > 0 {
		served := o.Hosts
		if len(served) == 0 {
			served = []string{o.Domain}
		}
		return fmt.Errorf("unknown host %s: not served here (hosts: %s); nothing was imported: add it to hosts, or import with --skip-unknown-hosts to import only the hosts served",
			strings.Join(unknown, ", "), strings.Join(served, ", "))
	}
	return nil
}

// converted is one user's rows.
type converted struct {
	ops     []storage.Op
	created bool
}

// importer holds one import's state.
type importer struct {
	st   storage.Store
	opt  ImportOptions
	prog *Progress
	warn warnings
	seq  atomic.Uint64

	mu  sync.Mutex
	sum Summary
}

// inputFiles is path itself, or for a directory the per-user files Prosody's
// xep0227 storage writes there (USER@HOST.xml), in name order.
func inputFiles(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	names, err := filepath.Glob(filepath.Join(path, "*@*.xml"))
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s: a directory without USER@HOST.xml files (Prosody's export); give ejabberd's export file itself", path)
	}
	sort.Strings(names)
	return names, nil
}

// Import reads the XEP-0227 file at path (and the files it includes) into st;
// path may also be a directory of Prosody's per-user files.
// prog (may be nil) is updated as it runs.
func Import(ctx context.Context, st storage.Store, opt ImportOptions, path string, prog *Progress) (Summary, error) {
	start := time.Now()
	if prog == nil {
		prog = &Progress{}
	}
	if opt.Iterations <= 0 {
		opt.Iterations = scram.DefaultIterations
	}
	if opt.BatchRows <= 0 {
		opt.BatchRows = 20000
	}
	if opt.Workers <= 0 {
		opt.Workers = runtime.GOMAXPROCS(0)
	}
	im := &importer{st: st, opt: opt, prog: prog}
	for _, t := range []string{accounts.Table, roster.TableItems, roster.TablePending, roster.TableVersion,
		vcard.Table, private.Table, offline.Table, blocking.Table, TablePrivacy} {
		if err := st.Declare(ctx, storage.TableSpec{Name: t, Copy: storage.Disc}); err != nil {
			return Summary{}, fmt.Errorf("migrate: declare %s: %w", t, err)
		}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	files, err := inputFiles(path)
	if err != nil {
		return Summary{}, fmt.Errorf("migrate: %w", err)
	}
	if err := opt.checkHosts(files, files[0] != path); err != nil {
		return Summary{}, fmt.Errorf("migrate: %w", err)
	}
	users := make(chan hostUser, 256)
	out := make(chan converted, 256)
	batches := make(chan []storage.Op, 1)

	// Reader: the file, one user at a time.
	var rd piefxis.Reader
	readErr := make(chan error, 1)
	go func() {
		defer close(users)
		fn := func(host string, u *piefxis.User) error {
			h := opt.served(host)
			if h == "" {
				if !opt.SkipUnknownHosts {
					return fmt.Errorf("unknown host %s: not served here", host)
				}
				im.mu.Lock()
				im.sum.OtherHosts++
				im.mu.Unlock()
				return nil
			}
			select {
			case users <- hostUser{h, u}:
				return nil
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		for _, f := range files {
			if err := rd.ReadFile(f, fn); err != nil {
				readErr <- err
				return
			}
		}
		readErr <- nil
	}()
	// Progress of the reader.
	stopProg := make(chan struct{})
	progDone := make(chan struct{})
	go func() {
		defer close(progDone)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			r, total, n := rd.Progress()
			prog.BytesRead.Store(r)
			prog.BytesTotal.Store(total)
			prog.Users.Store(n)
			select {
			case <-stopProg:
				return
			case <-t.C:
			}
		}
	}()
	// Workers: users to rows.
	var wg sync.WaitGroup
	for range opt.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for hu := range users {
				c, err := im.convert(hu.host, hu.u)
				if err != nil {
					im.warn.add("user %s@%s: %v (skipped)", hu.u.Name, hu.host, err)
					continue
				}
				select {
				case out <- c:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); close(out) }()
	// Committer: one batch in flight while the next fills.
	commitErr := make(chan error, 1)
	go func() {
		var err error
		for b := range batches {
			if err != nil {
				continue
			}
			if err = applyRetry(ctx, st, b); err != nil {
				cancel(err)
				continue
			}
			prog.Batches.Add(1)
			prog.RowsWritten.Add(int64(len(b)))
		}
		commitErr <- err
	}()
	// Batcher.
	var cur []storage.Op
	var curUsers int64
	flush := func() {
		if len(cur) == 0 {
			return
		}
		batches <- cur
		prog.Written.Add(curUsers)
		cur, curUsers = nil, 0
	}
	for c := range out {
		cur = append(cur, c.ops...)
		curUsers++
		if len(cur) >= opt.BatchRows {
			flush()
		}
	}
	flush()
	close(batches)
	cerr := <-commitErr
	rerr := <-readErr
	close(stopProg)
	<-progDone
	r, total, n := rd.Progress()
	prog.BytesRead.Store(r)
	prog.BytesTotal.Store(total)
	prog.Users.Store(n)

	im.mu.Lock()
	sum := im.sum
	im.mu.Unlock()
	sum.Batches = int(prog.Batches.Load())
	sum.Rows = int(prog.RowsWritten.Load())
	sum.Warnings = im.warn.result()
	sum.Seconds = time.Since(start).Seconds()
	sum.File = path
	if cerr != nil {
		return sum, fmt.Errorf("migrate: write: %w", cerr)
	}
	if rerr != nil {
		return sum, fmt.Errorf("migrate: %w", rerr)
	}
	return sum, nil
}

// record builds the users row from a user's credentials.
func (im *importer) record(u *piefxis.User) (accounts.Record, bool, error) {
	var rec accounts.Record
	for _, c := range u.SCRAM {
		k := scram.Keys{Salt: c.Salt, Iterations: c.Iterations, StoredKey: c.StoredKey, ServerKey: c.ServerKey}
		switch c.Mechanism {
		case scram.SHA1:
			rec.SHA1 = k
		case scram.SHA256:
			rec.SHA256 = k
		}
	}
	derived := false
	if u.Password != "" {
		var err error
		if len(rec.SHA1.StoredKey) == 0 {
			if rec.SHA1, err = scram.Derive(scram.SHA1, u.Password, im.opt.Iterations); err != nil {
				return rec, false, err
			}
			derived = true
		}
		if len(rec.SHA256.StoredKey) == 0 {
			if rec.SHA256, err = scram.Derive(scram.SHA256, u.Password, im.opt.Iterations); err != nil {
				return rec, false, err
			}
			derived = true
		}
	}
	return rec, derived, nil
}

// convert turns one user of host into rows, keyed by the user's key
// (module.UserKey: the localpart on the default host, localpart@host on another).
func (im *importer) convert(host string, u *piefxis.User) (converted, error) {
	uj, err := jid.New(u.Name, host, "")
	if err != nil {
		return converted{}, fmt.Errorf("invalid user name: %w", err)
	}
	user := uj.Local
	if host != im.opt.Domain {
		user += "@" + host
	}
	var c converted
	var n Summary
	users, err := im.st.Durable(accounts.Table)
	if err != nil {
		return c, err
	}
	_, exists, err := users.Get(user)
	if err != nil {
		return c, err
	}
	if exists {
		n.Existing++
	} else {
		rec, derived, err := im.record(u)
		if err != nil {
			return c, err
		}
		if derived {
			n.Derived++
		}
		if len(rec.SHA1.StoredKey) == 0 && len(rec.SHA256.StoredKey) == 0 {
			n.NoPassword++
			im.warn.add("user %s: no password or SCRAM credentials (set one with xmppctl passwd)", user)
		}
		b, _ := json.Marshal(rec)
		c.ops = append(c.ops, storage.Put(accounts.Table, user, b))
		c.created = true
		n.Created++
	}
	n.Users++

	// Roster, pending requests.
	if len(u.Roster) > 0 {
		for _, it := range u.Roster {
			cj, err := jid.Parse(it.JID)
			if err != nil || cj.Resource != "" {
				im.warn.add("user %s: roster item %q is not a bare JID (skipped)", user, it.JID)
				continue
			}
			sub := it.Subscription
			switch sub {
			case "":
				sub = roster.SubNone
			case roster.SubNone, roster.SubTo, roster.SubFrom, roster.SubBoth:
			default:
				im.warn.add("user %s: roster item %s has subscription %q (read as none)", user, it.JID, sub)
				sub = roster.SubNone
			}
			b, _ := json.Marshal(roster.Item{Name: it.Name, Groups: it.Groups, Sub: sub, Ask: it.Ask, Approved: it.Approved})
			c.ops = append(c.ops, storage.Put(roster.TableItems, modutil.Key(user, cj.String()), b))
			n.RosterItems++
		}
		cur := roster.EmptyVersion
		if exists {
			if vt, err := im.st.Durable(roster.TableVersion); err == nil {
				if b, ok, _ := vt.Get(user); ok && len(b) > 0 {
					cur = string(b)
				}
			}
		}
		c.ops = append(c.ops, storage.Put(roster.TableVersion, user, []byte(roster.NextVersion(cur))))
	}
	stamp := time.Now().UTC().Format("2006-01-02T15:04:05Z")
	for _, p := range u.Pending {
		fj, err := jid.Parse(p.From)
		if err != nil {
			im.warn.add("user %s: pending request from %q: not a JID (skipped)", user, p.From)
			continue
		}
		b, _ := json.Marshal(pendingRow{Status: p.Status, Stamp: stamp})
		c.ops = append(c.ops, storage.Put(roster.TablePending, modutil.Key(user, fj.Bare().String()), b))
		n.Pending++
	}
	// vCard.
	if u.VCard != nil {
		b := modutil.Encode(u.VCard)
		if len(b) > vcard.DefaultMaxBytes {
			im.warn.add("user %s: vCard of %d bytes is above the %d a client may set (imported)", user, len(b), vcard.DefaultMaxBytes)
		}
		c.ops = append(c.ops, storage.Put(vcard.Table, user, b))
		n.VCards++
	}
	// Private XML.
	for _, f := range u.Private {
		if private.Reserved(f.Space) {
			im.warn.add("user %s: private fragment {%s}%s in a reserved namespace (skipped)", user, f.Space, f.Local)
			continue
		}
		c.ops = append(c.ops, storage.Put(private.Table, modutil.Key(user, f.Space, f.Local), modutil.Encode(f)))
		n.Private++
	}
	// Offline messages, in file order, keyed by their delay stamp.
	for _, m := range u.Offline {
		t := time.Now()
		if d := m.Child(offline.NSDelay, "delay"); d != nil {
			if pt, err := time.Parse(time.RFC3339Nano, d.Attr("stamp")); err == nil {
				t = pt
			}
		} else {
			m = m.Copy()
			m.Append(xmlstream.New(offline.NSDelay, "delay", "from", host, "stamp", t.UTC().Format("2006-01-02T15:04:05.000Z")))
		}
		key := modutil.Key(user, fmt.Sprintf("%016x%08x", uint64(t.UnixNano()), im.seq.Add(1)&0xffffffff))
		c.ops = append(c.ops, storage.Put(offline.Table, key, modutil.Encode(m)))
		n.Offline++
	}
	// Privacy lists, and the block list (explicit, or from the default privacy list).
	blocked := append([]string(nil), u.Blocklist...)
	if u.Privacy != nil {
		c.ops = append(c.ops, storage.Put(TablePrivacy, user, modutil.Encode(u.Privacy)))
		n.Privacy++
		bl, partial := DefaultListBlocks(u.Privacy)
		blocked = append(blocked, bl...)
		if partial > 0 {
			im.warn.add("user %s: %d item(s) of the default privacy list are not a plain block of a JID (kept in the privacy list, not enforced)", user, partial)
		}
	}
	seen := map[string]bool{}
	for _, b := range blocked {
		bj, err := jid.Parse(b)
		if err != nil {
			im.warn.add("user %s: blocked %q: not a JID (skipped)", user, b)
			continue
		}
		k := bj.String()
		if seen[k] {
			continue
		}
		seen[k] = true
		c.ops = append(c.ops, storage.Put(blocking.Table, modutil.Key(user, k), nil))
		n.Blocked++
	}
	if len(u.Skipped) > 0 {
		n.Skipped += len(u.Skipped)
		im.warn.add("user %s: sections not imported: %s", user, strings.Join(u.Skipped, ", "))
	}
	im.mu.Lock()
	im.sum.add(n)
	if im.sum.Hosts == nil {
		im.sum.Hosts = map[string]int{}
	}
	im.sum.Hosts[host]++
	im.mu.Unlock()
	return c, nil
}

func (s *Summary) add(n Summary) {
	s.Users += n.Users
	s.Created += n.Created
	s.Existing += n.Existing
	s.Derived += n.Derived
	s.NoPassword += n.NoPassword
	s.RosterItems += n.RosterItems
	s.Pending += n.Pending
	s.VCards += n.VCards
	s.Private += n.Private
	s.Offline += n.Offline
	s.Privacy += n.Privacy
	s.Blocked += n.Blocked
	s.Skipped += n.Skipped
	for h, k := range n.Hosts {
		if s.Hosts == nil {
			s.Hosts = map[string]int{}
		}
		s.Hosts[h] += k
	}
}

// DefaultListBlocks returns the JIDs the default privacy list (XEP-0016) of a
// jabber:iq:privacy query denies every kind of stanza to and from (an item of
// type jid, action deny, without child elements: what XEP-0191 blocking is), and
// how many other items the default list has.
func DefaultListBlocks(q *xmlstream.Element) (jids []string, other int) {
	def := ""
	if d := q.Child(q.Space, "default"); d != nil {
		def = d.Attr("name")
	}
	if def == "" {
		return nil, 0
	}
	for _, l := range q.Children() {
		if l.Local != "list" || l.Attr("name") != def {
			continue
		}
		for _, it := range l.Children() {
			if it.Local != "item" {
				continue
			}
			if it.Attr("type") == "jid" && it.Attr("action") == "deny" && len(it.Children()) == 0 && it.Attr("value") != "" {
				jids = append(jids, it.Attr("value"))
			} else {
				other++
			}
		}
	}
	return jids, other
}
