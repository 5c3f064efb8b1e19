package last

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"xedge/storage"
	"xedge/xmppd/module"
)

// noticeBatch bounds the records one Notice write holds.
const noticeBatch = 1000

// Verdict is what delete_old_users does with one account.
type Verdict int

const (
	// Keep: online, or active since the cutoff.
	Keep Verdict = iota
	// Delete: offline, last active (or first noticed) before the cutoff.
	Delete
	// Notice: no record at all (an account older than this module, or one
	// that never logged in): kept, and a Noticed record dated now is
	// written, so it is deleted by a later run if it is still not seen.
	Notice
)

// Judge decides delete_old_users for one account: never an online one
// (a session on any node); one without a record is noticed, not deleted
// (xmppd keeps no creation time to judge it by); otherwise deleted when its
// record (a logout, or when it was first noticed) is before cutoff.
func Judge(r Record, found, online bool, cutoff time.Time) Verdict {
	switch {
	case online:
		return Keep
	case !found:
		return Notice
	case r.Time().Before(cutoff):
		return Delete
	}
	return Keep
}

// Old returns, of users (user keys, as module.UserKey names them), those
// delete_old_users DAYS deletes (see Judge), after catching up with the
// cluster's commits, and writes a Noticed record for each account without a
// record; noticed is how many. The caller deletes the accounts, checking
// again that each is still offline.
func (m *Module) Old(ctx context.Context, users []string, cutoff time.Time) (old []string, noticed int, err error) {
	if err := m.CatchUp(ctx); err != nil {
		return nil, 0, err
	}
	now := m.o.Now().Unix()
	var ops []storage.Op
	write := func() error {
		if len(ops) == 0 {
			return nil
		}
		if err := m.h.Store().Apply(ctx, ops...); err != nil {
			return fmt.Errorf("last: recording accounts seen without activity (%d recorded): %w", noticed, err)
		}
		noticed += len(ops)
		ops = ops[:0]
		return nil
	}
	for _, u := range users {
		r, found, err := m.Get(u)
		if err != nil {
			return nil, noticed, err
		}
		switch Judge(r, found, m.Online(module.UserJID(m.h, u)), cutoff) {
		case Delete:
			old = append(old, u)
		case Notice:
			b, _ := json.Marshal(Record{At: now, Noticed: true})
			ops = append(ops, storage.Put(Table, u, b))
			if len(ops) >= noticeBatch {
				if err := write(); err != nil {
					return nil, noticed, err
				}
			}
		}
	}
	if err := write(); err != nil {
		return nil, noticed, err
	}
	return old, noticed, nil
}
