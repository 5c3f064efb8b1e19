package muc

import (
	"context"
	"fmt"

	"xedge/xmppd/jid"
)

// Rooms made and removed by an administrator (xmppctl create_room and
// destroy_room, ejabberdctl's commands), through the same transaction as a
// client's join or destroy request.

// CreateRoom creates the persistent room roomJID (a bare JID at one of the
// services) with the default configuration, unlocked, with owners (bare
// JIDs, may be none) as its owners. created is false when the room existed
// (it is left as it is).
func (m *Module) CreateRoom(ctx context.Context, roomJID jid.JID, owners []string) (created bool, err error) {
	if err := m.adminRoom(roomJID); err != nil {
		return false, err
	}
	full := false
	err = m.transact(ctx, m.roomKey(roomJID), nil, false, false, func(_ *out, r *room) *room {
		created, full = false, false
		if r != nil {
			return r
		}
		if m.roomCount() >= MaxRooms {
			full = true
			return nil
		}
		r = newRoom(m.roomKey(roomJID), defaultConfig())
		r.cfg.Persistent = true
		for _, o := range owners {
			r.affs[o] = AffOwner
		}
		created = true
		return r
	})
	if err == nil && full {
		err = fmt.Errorf("muc: %d rooms, the limit", MaxRooms)
	}
	return created && err == nil, err
}

// DestroyRoom destroys the room roomJID as its owner would (its occupants are
// told, XEP-0045 §10.9) and reports whether it existed.
func (m *Module) DestroyRoom(ctx context.Context, roomJID jid.JID) (existed bool, err error) {
	if err := m.adminRoom(roomJID); err != nil {
		return false, err
	}
	err = m.transact(ctx, m.roomKey(roomJID), nil, true, false, func(o *out, r *room) *room {
		existed = r != nil && !r.gone
		if existed {
			m.destroy(ctx, o, r, nil)
		}
		return r
	})
	return existed && err == nil, err
}

func (m *Module) adminRoom(roomJID jid.JID) error {
	if !m.services[roomJID.Domain] {
		return fmt.Errorf("muc: %s is not a MUC service here (served: %v)", roomJID.Domain, m.Services())
	}
	if roomJID.Local == "" || roomJID.Resource != "" {
		return fmt.Errorf("muc: %q is not a room's bare JID", roomJID.String())
	}
	return nil
}
