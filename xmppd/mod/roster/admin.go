package roster

import (
	"context"
	"fmt"

	"xedge/xmppd/mod/internal/modutil"
)

// Writes by an administrator (xmppctl add_rosteritem and delete_rosteritem,
// ejabberdctl's commands): the item is written as given and pushed to the
// user's interested resources; no subscription presence is sent to the
// contact (as ejabberd's commands send none).

// SetItem writes user's roster item it (it.JID a bare JID; it.Sub none, to,
// from or both; no pending ask). An inbound request pending from the contact
// is dropped once the contact has a from subscription.
func (m *Module) SetItem(ctx context.Context, user string, it Item) error {
	switch it.Sub {
	case SubNone, SubTo, SubFrom, SubBoth:
	default:
		return fmt.Errorf("roster: subscription %q: none, to, from or both", it.Sub)
	}
	if len(it.Name) > maxNameLen || len(it.Groups) > maxGroups {
		return fmt.Errorf("roster: name longer than %d bytes or more than %d groups", maxNameLen, maxGroups)
	}
	unlock := m.locks.Lock(user)
	old, _ := m.state(user, it.JID)
	if !old.InRoster {
		if n, err := m.items.Count(modutil.UserPrefix(user)); err == nil && n >= MaxItems {
			unlock()
			return fmt.Errorf("roster: %s has %d items, the limit", user, n)
		}
	}
	s := State{InRoster: true, Sub: it.Sub, PendIn: old.PendIn && !HasFrom(it.Sub)}
	ver, changed, err := m.commitItem(ctx, user, old, it, s, false, true, nil)
	unlock()
	if err != nil {
		return err
	}
	if changed {
		it.Ask, it.Approved = false, false
		m.push(user, ver, it, false)
	}
	return nil
}

// RemoveItem deletes user's roster item for contact (a bare JID) and reports
// whether there was one.
func (m *Module) RemoveItem(ctx context.Context, user, contact string) (bool, error) {
	unlock := m.locks.Lock(user)
	old, it := m.state(user, contact)
	if !old.InRoster {
		unlock()
		return false, nil
	}
	ver, _, err := m.commit(ctx, user, old, it, State{Sub: SubNone}, true, nil)
	unlock()
	if err != nil {
		return false, err
	}
	m.push(user, ver, it, true)
	return true, nil
}
