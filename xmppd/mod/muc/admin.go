package muc

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"

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

// Room options, affiliations and occupants for an administrator (xmppctl's
// get_room_options, change_room_option, set_room_affiliation,
// get_room_affiliations, get_room_occupants and get_room_occupants_number,
// ejabberd's mod_muc_admin commands). Reads catch up with the cluster first
// (sync), so a change committed through another node is seen; changes go
// through the same transaction as an owner's.

// ErrNoRoom is returned for a room that does not exist.
var ErrNoRoom = errors.New("room does not exist")

// RoomOption is one option of a room, named as ejabberd's room options are.
type RoomOption struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// RoomOccupant is one occupant of a room.
type RoomOccupant struct {
	JID  string `json:"jid"`
	Nick string `json:"nick"`
	Role string `json:"role"`
}

// roomOptionNames are the options RoomOptions lists and SetRoomOption takes,
// in the order of ejabberd's room configuration record (mam: whether the room
// archives its messages); history_size (the room's muc#maxhistoryfetch) is
// xmppd's.
var roomOptionNames = []string{"title", "description", "allow_change_subj", "public", "persistent", "moderated",
	"members_only", "allow_user_invites", "password_protected", "password", "anonymous", "mam", "history_size"}

// RoomOptionNames lists the option names SetRoomOption takes.
func RoomOptionNames() []string { return append([]string(nil), roomOptionNames...) }

// boolOptions are the boolean options stored as they are named.
var boolOptions = map[string]func(c *Config) *bool{
	"allow_change_subj":  func(c *Config) *bool { return &c.ChangeSubject },
	"public":             func(c *Config) *bool { return &c.Public },
	"persistent":         func(c *Config) *bool { return &c.Persistent },
	"moderated":          func(c *Config) *bool { return &c.Moderated },
	"members_only":       func(c *Config) *bool { return &c.MembersOnly },
	"allow_user_invites": func(c *Config) *bool { return &c.AllowInvites },
}

func optionValue(c Config, name string) string {
	if f := boolOptions[name]; f != nil {
		return strconv.FormatBool(*f(&c))
	}
	switch name {
	case "title":
		return c.Name
	case "description":
		return c.Desc
	case "password_protected":
		return strconv.FormatBool(c.Password != "")
	case "password":
		return c.Password
	case "anonymous":
		return strconv.FormatBool(!c.NonAnonymous)
	case "mam":
		return strconv.FormatBool(!c.NoArchive)
	case "history_size":
		return strconv.Itoa(c.History)
	}
	return ""
}

// setOption returns c with option name set to value (ejabberd's spelling:
// true/false for the boolean ones).
func setOption(c Config, name, value string) (Config, error) {
	switch name {
	case "title":
		c.Name = value
		return c, nil
	case "description":
		c.Desc = value
		return c, nil
	case "password":
		c.Password = value
		return c, nil
	case "history_size":
		n, err := strconv.Atoi(value)
		if err != nil || n < 0 || n > MaxHistory {
			return c, fmt.Errorf("invalid value %q for history_size: 0 to %d", value, MaxHistory)
		}
		c.History = n
		return c, nil
	case "password_protected", "anonymous", "mam":
	default:
		if boolOptions[name] == nil {
			return c, fmt.Errorf("unknown room option %q (xmppd's: %s)", name, strings.Join(roomOptionNames, ", "))
		}
	}
	var v bool
	switch value {
	case "true":
		v = true
	case "false":
	default:
		return c, fmt.Errorf("invalid value %q for %s: true or false", value, name)
	}
	switch name {
	case "password_protected":
		if v && c.Password == "" {
			return c, errors.New("password_protected true needs a password: set the password option")
		}
		if !v {
			c.Password = ""
		}
	case "anonymous":
		c.NonAnonymous = !v
	case "mam":
		c.NoArchive = !v
	default:
		*boolOptions[name](&c) = v
	}
	return c, nil
}

// current reads the room roomJID as it is committed in the cluster.
func (m *Module) current(ctx context.Context, roomJID jid.JID) (*room, error) {
	if err := m.adminRoom(roomJID); err != nil {
		return nil, err
	}
	if err := m.sync(ctx); err != nil {
		return nil, fmt.Errorf("muc: catching up with the cluster: %w", err)
	}
	c, err := m.view(m.roomKey(roomJID))
	if err != nil {
		return nil, err
	}
	if c.r == nil || c.r.gone {
		return nil, ErrNoRoom
	}
	return c.r, nil
}

// RoomOptions returns the room's options (RoomOptionNames, in that order).
func (m *Module) RoomOptions(ctx context.Context, roomJID jid.JID) ([]RoomOption, error) {
	r, err := m.current(ctx, roomJID)
	if err != nil {
		return nil, err
	}
	out := make([]RoomOption, 0, len(roomOptionNames))
	for _, n := range roomOptionNames {
		out = append(out, RoomOption{Name: n, Value: optionValue(r.cfg, n)})
	}
	return out, nil
}

// RoomAffiliations returns the room's affiliations (bare JID -> owner,
// admin, member or outcast).
func (m *Module) RoomAffiliations(ctx context.Context, roomJID jid.JID) (map[string]string, error) {
	r, err := m.current(ctx, roomJID)
	if err != nil {
		return nil, err
	}
	return maps.Clone(r.affs), nil
}

// RoomOccupants returns the room's occupants, sorted by nick.
func (m *Module) RoomOccupants(ctx context.Context, roomJID jid.JID) ([]RoomOccupant, error) {
	r, err := m.current(ctx, roomJID)
	if err != nil {
		return nil, err
	}
	out := []RoomOccupant{}
	for _, oc := range r.sortedOccupants() {
		out = append(out, RoomOccupant{JID: oc.full(), Nick: oc.nick, Role: oc.role})
	}
	return out, nil
}

// adminChange runs fn on the room roomJID in a transaction, after catching
// up with the cluster; ErrNoRoom if it does not exist.
func (m *Module) adminChange(ctx context.Context, roomJID jid.JID, fn func(o *out, r *room) error) error {
	if err := m.adminRoom(roomJID); err != nil {
		return err
	}
	if err := m.sync(ctx); err != nil {
		return fmt.Errorf("muc: catching up with the cluster: %w", err)
	}
	var ferr error
	err := m.transact(ctx, m.roomKey(roomJID), nil, true, false, func(o *out, r *room) *room {
		ferr = nil
		if r == nil || r.gone {
			ferr = ErrNoRoom
			return r
		}
		ferr = fn(o, r) // changes r only when it succeeds
		return r
	})
	if err != nil {
		return err
	}
	return ferr
}

// SetRoomOption sets one option of the room (RoomOptionNames; booleans true
// or false). Making a room members-only sends its non-members out (status
// 322), as an owner's configuration does; making an empty room temporary
// destroys it.
func (m *Module) SetRoomOption(ctx context.Context, roomJID jid.JID, name, value string) error {
	return m.adminChange(ctx, roomJID, func(o *out, r *room) error {
		cfg, err := setOption(r.cfg, name, value)
		if err != nil {
			return err
		}
		old := r.cfg
		r.cfg = cfg
		r.locked = false
		if cfg.MembersOnly && !old.MembersOnly {
			for _, n := range r.sortedNicks() {
				if oc := r.occ[n]; affRank[r.aff(oc.jid)] < affRank[AffMember] {
					m.leave(ctx, o, r, oc, []string{"322"}, "")
				}
			}
		}
		if !cfg.Persistent && len(r.occ) == 0 {
			// A temporary room with nobody in it is gone, as when its last
			// occupant leaves.
			m.destroy(ctx, o, r, nil)
		}
		return nil
	})
}

// SetRoomAffiliation gives bare JID who the affiliation aff (owner, admin,
// member, outcast, or none to remove it) in the room, with the effect an
// owner's change has on who's occupants (an outcast is banned, 301; ...).
func (m *Module) SetRoomAffiliation(ctx context.Context, roomJID, who jid.JID, aff string) error {
	if _, ok := affRank[aff]; !ok {
		return fmt.Errorf("invalid affiliation %q: owner, admin, member, outcast or none", aff)
	}
	who = who.Bare()
	return m.adminChange(ctx, roomJID, func(o *out, r *room) error {
		if aff == AffNone {
			delete(r.affs, who.String())
		} else {
			r.affs[who.String()] = aff
		}
		m.affiliationChanged(ctx, o, r, who, aff)
		return nil
	})
}
