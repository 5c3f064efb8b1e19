package server

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"xedge/xmppd/jid"
	"xedge/xmppd/mod/muc"
)

// ejabberdctl's MUC room administration (mod_muc_admin): get_room_options,
// change_room_option, set_room_affiliation, get_room_affiliations,
// get_room_occupants and get_room_occupants_number. NAME SERVICE names a
// room of one of the served MUC services (conference.HOST or a host's
// muc_domain); another service, a room that does not exist, an unknown
// option or affiliation is refused with exit 1. The data is the rooms'
// replicated rows: a command through any node reads and changes the
// cluster's room.

// RoomAffiliation is one line of get_room_affiliations.
type RoomAffiliation struct {
	JID         string `json:"jid"`
	Affiliation string `json:"affiliation"`
	Reason      string `json:"reason"`
}

// mucRoom resolves NAME SERVICE to a room JID at a served MUC service.
func mucRoom(mu *muc.Module, name, service string) (jid.JID, error) {
	if mu == nil {
		return jid.JID{}, errors.New("the muc module is not loaded")
	}
	var svc string
	for _, sv := range mu.Services() {
		if strings.EqualFold(sv, service) {
			svc = sv
		}
	}
	if svc == "" {
		return jid.JID{}, fmt.Errorf("unknown MUC service %q (served: %v)", service, mu.Services())
	}
	r, err := jid.New(name, svc, "")
	if err != nil || r.Local == "" {
		return jid.JID{}, fmt.Errorf("invalid room name %q", name)
	}
	return r, nil
}

// roomErr names the room in a refusal for a room that does not exist.
func roomErr(r jid.JID, err error) error {
	if errors.Is(err, muc.ErrNoRoom) {
		return fmt.Errorf("room %s does not exist", r)
	}
	return err
}

func (s *Server) roomAdminHandlers(mu *muc.Module) {
	a := s.Admin
	// room runs fn on the room of NAME SERVICE (args 0, 1) after checking the
	// argument count.
	room := func(name, usage string, n []int, fn func(ctx context.Context, r jid.JID, args []string) (any, error)) {
		a.Handle(name, func(ctx context.Context, args []string) (any, error) {
			ok := false
			for _, k := range n {
				ok = ok || len(args) == k
			}
			if !ok {
				return nil, errors.New("usage: " + name + " " + usage)
			}
			r, err := mucRoom(mu, args[0], args[1])
			if err != nil {
				return nil, err
			}
			res, err := fn(ctx, r, args[2:])
			return res, roomErr(r, err)
		})
	}
	room("get_room_options", "NAME SERVICE", []int{2}, func(ctx context.Context, r jid.JID, _ []string) (any, error) {
		return mu.RoomOptions(ctx, r)
	})
	room("change_room_option", "NAME SERVICE OPTION VALUE", []int{4}, func(ctx context.Context, r jid.JID, args []string) (any, error) {
		if err := mu.SetRoomOption(ctx, r, args[0], args[1]); err != nil {
			return nil, err
		}
		s.log.Info("room option changed", "room", r.String(), "option", args[0])
		return fmt.Sprintf("%s of room %s set to %s", args[0], r, args[1]), nil
	})
	// ejabberd's form is NAME SERVICE JID AFFILIATION; its API version 3
	// (ejabberd 24.12) takes NAME SERVICE USER HOST AFFILIATION: both work.
	room("set_room_affiliation", "NAME SERVICE JID AFFILIATION | NAME SERVICE USER HOST AFFILIATION", []int{4, 5}, func(ctx context.Context, r jid.JID, args []string) (any, error) {
		who, aff := args[0], args[len(args)-1]
		if len(args) == 3 {
			who = args[0] + "@" + args[1]
		}
		j, err := jid.Parse(who)
		if err != nil || j.Domain == "" {
			return nil, fmt.Errorf("invalid JID %q", who)
		}
		if err := mu.SetRoomAffiliation(ctx, r, j, aff); err != nil {
			return nil, err
		}
		s.log.Info("room affiliation changed", "room", r.String(), "jid", j.Bare().String(), "affiliation", aff)
		return fmt.Sprintf("%s is %s of room %s", j.Bare(), aff, r), nil
	})
	room("get_room_affiliations", "NAME SERVICE", []int{2}, func(ctx context.Context, r jid.JID, _ []string) (any, error) {
		affs, err := mu.RoomAffiliations(ctx, r)
		if err != nil {
			return nil, err
		}
		out := []RoomAffiliation{}
		for j, af := range affs {
			out = append(out, RoomAffiliation{JID: j, Affiliation: af})
		}
		sort.Slice(out, func(i, k int) bool { return out[i].JID < out[k].JID })
		return out, nil
	})
	room("get_room_occupants", "NAME SERVICE", []int{2}, func(ctx context.Context, r jid.JID, _ []string) (any, error) {
		return mu.RoomOccupants(ctx, r)
	})
	room("get_room_occupants_number", "NAME SERVICE", []int{2}, func(ctx context.Context, r jid.JID, _ []string) (any, error) {
		occ, err := mu.RoomOccupants(ctx, r)
		return len(occ), err
	})
}
