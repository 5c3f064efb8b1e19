package mam

import (
	"context"
	"time"

	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// MAM for MUC rooms (XEP-0313 §4.1.2, XEP-0359 by the room): the MUC module
// archives each groupchat message with a body that a room relays, in the room's
// archive (owner = the room's bare JID, with = room/nick of the sender, direction
// In), stamps the copies it sends with the returned id as <stanza-id by=room/>,
// reads its history on join from the archive, and hands queries sent to the room
// JID to QueryRoom once it has checked that the sender may read the room. The
// records go through the module's appender like a user's, so a room's archive is
// written in batches by every node whose users speak in it; the ids are
// time-ordered and carry the node's tag, so they are unique cluster-wide.

// RoomArchive is the module's archive for MUC rooms (it satisfies muc.Archive).
type RoomArchive struct{ m *Module }

// Rooms returns the archive for MUC rooms, backed by m's store and appender.
func (m *Module) Rooms() *RoomArchive { return &RoomArchive{m: m} }

// StoreRoom queues msg (a groupchat message from room/nick, without to) for
// room's archive and returns its id.
func (a *RoomArchive) StoreRoom(room, nick string, msg *xmlstream.Element) string {
	return a.m.Append(room, In, room+"/"+nick, msg)
}

// RecentRoom calls fn for room's last max archived messages, oldest first (max
// is capped at MaxPageSize).
func (a *RoomArchive) RecentRoom(ctx context.Context, room string, max int, fn func(id string, at time.Time, msg *xmlstream.Element)) error {
	if max <= 0 {
		return nil
	}
	p, err := a.m.Query(ctx, room, Query{Max: min(max, MaxPageSize), BeforeSet: true})
	if err != nil {
		return err
	}
	for _, it := range p.Items {
		fn(it.ID, it.Time, it.Msg)
	}
	return nil
}

// QueryRoom answers a urn:xmpp:mam:2 IQ that from sent to room: the form on a
// get, the results (messages from the room's bare JID) and the <fin/> on a set.
// The MUC module decides beforehand whether from may read the archive.
func (a *RoomArchive) QueryRoom(ctx context.Context, st *xmlstream.Element, from, room jid.JID) {
	iq := &module.IQ{Stanza: st, From: from, To: room}
	p := iq.Payload()
	switch {
	case p == nil || p.Space != NS:
		modutil.ReplyError(ctx, a.m.h, iq, module.ErrModify, "bad-request", "")
	case p.Local == "query" && st.Attr("type") == "get":
		modutil.ReplyResult(ctx, a.m.h, iq, queryForm())
	case p.Local == "query" && st.Attr("type") == "set":
		a.m.query(ctx, a.m.h, iq, room.Bare().String(), p)
	default:
		modutil.ReplyError(ctx, a.m.h, iq, module.ErrCancel, "feature-not-implemented", "")
	}
}
