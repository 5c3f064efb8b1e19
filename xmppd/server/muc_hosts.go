package server

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"xedge/xmppd/mod/muc"
)

// MUC with virtual hosts: every served host has its own conference service
// (conference.HOST, or the host's host_config muc_domain), set on the MUC
// module before it starts; `xmppctl muc_online_rooms SERVICE|global` lists
// the rooms as ejabberdctl does.

func init() { registerFeature(Feature{Name: "muc services", Build: buildMUCHosts}) }

func buildMUCHosts(s *Server) ([]StagedComponent, error) {
	var m *muc.Module
	for _, mod := range s.Modules {
		if mm, ok := mod.(*muc.Module); ok {
			m = mm
		}
	}
	if m == nil {
		return nil, nil
	}
	svcs := map[string]string{}
	for _, d := range s.cfg.HostNames() {
		if hc, ok := s.cfg.Host(d); ok && hc.MUCDomain != "" {
			svcs[d] = hc.MUCDomain
		}
	}
	m.SetServices(svcs)
	s.Admin.Handle("muc_online_rooms", func(_ context.Context, args []string) (any, error) {
		if len(args) != 1 {
			return nil, errors.New("usage: muc_online_rooms SERVICE|global")
		}
		svc := args[0]
		if svc == "global" {
			svc = ""
		} else if !slices.Contains(m.Services(), svc) {
			return nil, fmt.Errorf("unknown MUC service %q (served: %v)", svc, m.Services())
		}
		out := m.RoomJIDs(svc)
		if out == nil {
			out = []string{}
		}
		return out, nil
	})
	return nil, nil
}
