package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"time"

	"xedge/xmppd/cluster"
	xep0114 "xedge/xmppd/component"
	"xedge/xmppd/jid"
	"xedge/xmppd/mod/storm"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// The external component feature (XEP-0114, docs/components.md): the component
// listener (--component, secrets per domain in components), the router's domain
// routing for every configured component domain, and cluster-wide reach: the node
// a component is connected to announces it in the ephemeral table ComponentTable,
// and the other nodes forward stanzas for its domain to that node over the
// cluster bus. It also hands the storm-control settings to the storm module.

// ComponentTable is the ephemeral table in which a node announces the component
// domains connected to it: key domain, value a ComponentRow.
const ComponentTable = "component"

// ComponentRow is a node's row in ComponentTable.
type ComponentRow struct {
	Since time.Time `json:"since"`
}

// kindComponent is the bus message kind of a stanza for a component connected
// to the receiving node (To: the component domain, Body: the stanza).
const kindComponent = "component"

func init() { registerFeature(Feature{Name: "component", Build: buildComponent}) }

type componentFeature struct {
	s   *Server
	srv *xep0114.Server
}

func buildComponent(s *Server) ([]StagedComponent, error) {
	// Storm control: the module joins the module list here (New starts the modules
	// after building the features) unless the module list already has it.
	sc := storm.Config{PresenceMax: s.cfg.Storm.PresenceMax, PresenceWindow: s.cfg.Storm.PresenceWindow,
		MaxUserSessions: s.cfg.Storm.MaxUserSessions}
	var sm *storm.Module
	for _, m := range s.Modules {
		if m, ok := m.(*storm.Module); ok {
			sm = m
		}
	}
	if sm == nil {
		sm = storm.New()
		s.Modules = append(s.Modules, sm)
	}
	sm.Configure(sc)
	kc := s.cfg.Component
	if len(kc.Secrets) == 0 || s.cfg.Witness {
		s.Admin.Handle("components", func(context.Context, []string) (any, error) {
			return nil, fmt.Errorf("no components configured (set component and components)")
		})
		return nil, nil
	}
	f := &componentFeature{s: s}
	lim := xmlstream.DefaultLimits()
	lim.MaxStanza, lim.MaxDepth = s.cfg.MaxStanza, s.cfg.MaxDepth
	f.srv = xep0114.New(xep0114.Config{
		Secrets: kc.Secrets, Limits: lim, HandshakeTimeout: kc.Timeout, SendQueue: s.cfg.SendQueue, Logger: s.log,
		Route:        func(ctx context.Context, st *xmlstream.Element) { s.Router.Route(ctx, st) },
		Elsewhere:    func(d string) bool { return f.holder(d) != "" },
		Connected:    f.connected,
		Disconnected: f.disconnected,
	})
	if kc.Listen != "" {
		f.srv.Listen(kc.Listen)
	}
	s.Admin.Handle("components", f.admin)
	return []StagedComponent{{Stage: AfterModules, Name: "component", Start: f.start, Stop: f.stop}}, nil
}

func (f *componentFeature) start(ctx context.Context) error {
	if b := f.s.Bus(); b != nil {
		b.Handle(kindComponent, f.fromBus)
	}
	for d := range f.s.cfg.Component.Secrets {
		f.s.Router.HandleDomain(d, f.route)
	}
	return f.srv.Start(ctx)
}

func (f *componentFeature) stop(ctx context.Context) error {
	for d := range f.s.cfg.Component.Secrets {
		f.s.Router.HandleDomain(d, nil)
	}
	return f.srv.Stop(ctx)
}

func (f *componentFeature) connected(domain string) {
	b, _ := json.Marshal(ComponentRow{Since: time.Now().UTC()})
	f.s.Store.Ephemeral(ComponentTable).Put(domain, b)
}

func (f *componentFeature) disconnected(domain string) {
	f.s.Store.Ephemeral(ComponentTable).Delete(domain)
}

// route takes a stanza for a component domain (or a JID at it): to the component
// if it is connected here, else over the bus to the node that has it, else an
// error bounce.
func (f *componentFeature) route(ctx context.Context, st *xmlstream.Element, _, to jid.JID) {
	if f.srv.Deliver(to.Domain, st) {
		return
	}
	if node := f.holder(to.Domain); node != "" {
		if b := f.s.Bus(); b != nil {
			body := xmlstream.AppendElement(nil, st, xmlstream.NSClient)
			b.Send(node, &cluster.Message{Kind: kindComponent, To: to.Domain, Body: body},
				func(*cluster.Message, error) { f.bounce(context.WithoutCancel(ctx), st) })
			return
		}
	}
	f.bounce(ctx, st)
}

// holder returns another node with the component for domain connected, or "".
func (f *componentFeature) holder(domain string) string {
	for _, r := range f.s.Store.Ephemeral(ComponentTable).Get(domain) {
		if r.Node != f.s.cfg.Node {
			return r.Node
		}
	}
	return ""
}

func (f *componentFeature) bounce(ctx context.Context, st *xmlstream.Element) {
	if st.Attr("type") == "error" || st.Attr("from") == "" {
		return
	}
	if st.Local == "presence" && st.Attr("type") != "" && st.Attr("type") != "probe" {
		return // unavailable, subscription changes: nothing to answer
	}
	f.s.Router.Route(ctx, module.Error(st, module.ErrCancel, "service-unavailable", "component not connected"))
}

var componentStreamHead = []byte("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")

// fromBus delivers a stanza another node forwarded to a component connected here.
func (f *componentFeature) fromBus(ctx context.Context, _ cluster.Peer, m *cluster.Message) ([]byte, error) {
	d := xmlstream.NewDecoder(io.MultiReader(bytes.NewReader(componentStreamHead), bytes.NewReader(m.Body)), xmlstream.DefaultLimits())
	if _, err := d.StreamHeader(); err != nil {
		return nil, err
	}
	st, err := d.Next()
	if err != nil {
		f.s.log.Warn("component: undecodable stanza from the bus", "err", err)
		return nil, nil
	}
	if !f.srv.Deliver(m.To, st) {
		f.bounce(ctx, st)
	}
	return nil, nil
}

// ComponentStatus is `xmppctl components` (the admin command "components").
type ComponentStatus struct {
	Domain string `json:"domain"`
	Node   string `json:"node,omitempty"` // where it is connected ("" = nowhere)
}

func (f *componentFeature) admin(context.Context, []string) (any, error) {
	var out []ComponentStatus
	for d := range f.s.cfg.Component.Secrets {
		st := ComponentStatus{Domain: d}
		for _, r := range f.s.Store.Ephemeral(ComponentTable).Get(d) {
			st.Node = r.Node
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Domain < out[j].Domain })
	return out, nil
}
