package migrate

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"xedge/storage"
	"xedge/xmppd/accounts"
	"xedge/xmppd/internal/scram"
	"xedge/xmppd/mod/blocking"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/mod/offline"
	"xedge/xmppd/mod/private"
	"xedge/xmppd/mod/roster"
	"xedge/xmppd/mod/vcard"
	"xedge/xmppd/piefxis"
)

// Export writes every account of domain in st to w as one <host/> (a server
// with one host). The caller closes w. prog (may be nil) counts the users
// written.
func Export(ctx context.Context, st storage.Store, domain string, w *piefxis.Writer, prog *Progress) (Summary, error) {
	if err := w.StartHost(domain); err != nil {
		return Summary{}, fmt.Errorf("migrate: %w", err)
	}
	return ExportHost(ctx, st, domain, domain, w, prog)
}

// hostUsers lists the users of host in the users table: the keys without '@'
// for the default host (def), the keys localpart@host for another host; it
// returns each user's key and name (localpart).
func hostUsers(st storage.Store, host, def string) (keys, names []string, err error) {
	users, err := st.Durable(accounts.Table)
	if err != nil {
		return nil, nil, fmt.Errorf("migrate: %w", err)
	}
	err = users.Scan("", func(k string, _ []byte) bool {
		local, h, qualified := strings.Cut(k, "@")
		if (host == def && !qualified) || (qualified && h == host && host != def) {
			keys, names = append(keys, k), append(names, local)
		}
		return true
	})
	if err != nil {
		return nil, nil, fmt.Errorf("migrate: scan users: %w", err)
	}
	return keys, names, nil
}

// ExportHost writes the accounts of host (a served domain; def is the
// server's default host) to w, inside the host w is writing. prog (may be
// nil) counts the users written.
func ExportHost(ctx context.Context, st storage.Store, host, def string, w *piefxis.Writer, prog *Progress) (Summary, error) {
	start := time.Now()
	if prog == nil {
		prog = &Progress{}
	}
	keys, names, err := hostUsers(st, host, def)
	if err != nil {
		return Summary{}, err
	}
	prog.Total.Add(int64(len(keys)))
	ex := exporter{st: st}
	var sum Summary
	for i, key := range keys {
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		u, ok, err := ex.user(key, names[i], &sum)
		if err != nil {
			return sum, fmt.Errorf("migrate: user %s: %w", key, err)
		}
		if !ok { // removed meanwhile
			continue
		}
		if err := w.User(u); err != nil {
			return sum, fmt.Errorf("migrate: write: %w", err)
		}
		sum.Users++
		prog.Users.Add(1)
	}
	sum.Seconds = time.Since(start).Seconds()
	return sum, nil
}

type exporter struct{ st storage.Store }

func (ex exporter) table(name string) storage.Table {
	t, err := ex.st.Durable(name)
	if err != nil {
		return nil // not declared: the module never ran, so it has no rows
	}
	return t
}

// scan calls fn for each row of user in a "user\x00..." table, with the rest of the key.
func (ex exporter) scan(table, user string, fn func(rest string, v []byte) error) error {
	t := ex.table(table)
	if t == nil {
		return nil
	}
	p := modutil.UserPrefix(user)
	var ferr error
	err := t.Scan(p, func(k string, v []byte) bool {
		ferr = fn(strings.TrimPrefix(k, p), v)
		return ferr == nil
	})
	if err != nil {
		return err
	}
	return ferr
}

// user reads the rows of the user whose key is key (module.UserKey) and
// names it name in the file.
func (ex exporter) user(key, name string, sum *Summary) (*piefxis.User, bool, error) {
	t := ex.table(accounts.Table)
	b, ok, err := t.Get(key)
	if err != nil || !ok {
		return nil, false, err
	}
	var rec accounts.Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, false, fmt.Errorf("decode account: %w", err)
	}
	u := &piefxis.User{Name: name}
	for _, k := range []struct {
		mech string
		keys scram.Keys
	}{{scram.SHA1, rec.SHA1}, {scram.SHA256, rec.SHA256}} {
		if len(k.keys.StoredKey) > 0 {
			u.SCRAM = append(u.SCRAM, piefxis.SCRAM{Mechanism: k.mech, Iterations: k.keys.Iterations,
				Salt: k.keys.Salt, StoredKey: k.keys.StoredKey, ServerKey: k.keys.ServerKey})
		}
	}
	err = ex.scan(roster.TableItems, key, func(contact string, v []byte) error {
		var it roster.Item
		if err := json.Unmarshal(v, &it); err != nil {
			return fmt.Errorf("roster item %s: %w", contact, err)
		}
		u.Roster = append(u.Roster, piefxis.RosterItem{JID: contact, Name: it.Name, Subscription: it.Sub,
			Ask: it.Ask, Approved: it.Approved, Groups: it.Groups})
		sum.RosterItems++
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	err = ex.scan(roster.TablePending, key, func(contact string, v []byte) error {
		var p pendingRow
		_ = json.Unmarshal(v, &p)
		u.Pending = append(u.Pending, piefxis.Pending{From: contact, Status: p.Status})
		sum.Pending++
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	if vt := ex.table(vcard.Table); vt != nil {
		if b, ok, err := vt.Get(key); err != nil {
			return nil, false, err
		} else if ok {
			if u.VCard, err = modutil.Decode(b); err != nil {
				return nil, false, fmt.Errorf("vcard: %w", err)
			}
			sum.VCards++
		}
	}
	err = ex.scan(private.Table, key, func(k string, v []byte) error {
		e, err := modutil.Decode(v)
		if err != nil {
			return fmt.Errorf("private %q: %w", k, err)
		}
		u.Private = append(u.Private, e)
		sum.Private++
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	err = ex.scan(offline.Table, key, func(k string, v []byte) error {
		e, err := modutil.Decode(v)
		if err != nil {
			return fmt.Errorf("offline %q: %w", k, err)
		}
		u.Offline = append(u.Offline, e)
		sum.Offline++
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	if pt := ex.table(TablePrivacy); pt != nil {
		if b, ok, err := pt.Get(key); err != nil {
			return nil, false, err
		} else if ok {
			if u.Privacy, err = modutil.Decode(b); err != nil {
				return nil, false, fmt.Errorf("privacy: %w", err)
			}
			sum.Privacy++
		}
	}
	err = ex.scan(blocking.Table, key, func(j string, _ []byte) error {
		u.Blocklist = append(u.Blocklist, j)
		sum.Blocked++
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return u, true, nil
}
