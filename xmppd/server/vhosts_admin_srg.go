package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"xedge/storage"
	"xedge/xmppd/jid"
	"xedge/xmppd/mod/roster"
	"xedge/xmppd/xmlstream"
)

// ejabberdctl's shared roster groups (mod_shared_roster, mod_admin_extra's
// srg_* commands): srg_create GROUP HOST LABEL DESCRIPTION DISPLAY,
// srg_delete, srg_list HOST, srg_get_info, srg_get_members, srg_user_add
// USER HOST GROUP GROUPHOST and srg_user_del. As in ejabberd, a member of a
// group sees in their roster the members of each group that group displays
// (DISPLAY: group names of the same host, the group itself for members who
// see each other), under the displayed group's label, with subscription
// both: presence flows both ways.
//
// xmppd makes the shared contacts real roster items: after each change the
// rosters are brought to what the groups say (items added, regrouped or
// removed, pushed to the users' clients; a contact's current presence is sent
// to a user who just got it). Only items this code added are changed or
// removed: a contact a user had in their roster before keeps the user's own
// item. Unlike ejabberd's virtual items a user may remove a shared item
// from their roster; it comes back at the next change of the groups.
//
// Table srg (durable): "g\x00host\x00group" -> srgGroup, and
// "i\x00user\x00contact" -> the labels under which the groups put contact in
// user's roster (bare JIDs).

// SRGTable is the shared roster groups' table.
const SRGTable = "srg"

type srgGroup struct {
	Label   string   `json:"label"`
	Desc    string   `json:"description"`
	Display []string `json:"display,omitempty"`
	Members []string `json:"members,omitempty"` // bare JIDs, sorted
}

func srgGroupKey(host, group string) string  { return "g\x00" + host + "\x00" + group }
func srgItemKey(user, contact string) string { return "i\x00" + user + "\x00" + contact }

// srgAdmin holds the srg commands' state.
type srgAdmin struct {
	s   *Server
	ros *roster.Module
	mu  sync.Mutex // one change at a time on this node
}

func (a *srgAdmin) table() (storage.Table, error) {
	if a.ros == nil {
		return nil, errors.New("the roster module is not loaded")
	}
	return a.s.Store.Durable(SRGTable)
}

// start declares the table.
func (a *srgAdmin) start(ctx context.Context) error {
	return a.s.Store.Declare(ctx, storage.TableSpec{Name: SRGTable, Copy: storage.Disc})
}

// group reads GROUP at HOST (ok false: none).
func (a *srgAdmin) group(host, name string) (srgGroup, bool, error) {
	t, err := a.table()
	if err != nil {
		return srgGroup{}, false, err
	}
	b, ok, err := t.Get(srgGroupKey(host, name))
	if err != nil || !ok {
		return srgGroup{}, false, err
	}
	var g srgGroup
	if err := json.Unmarshal(b, &g); err != nil {
		return srgGroup{}, false, fmt.Errorf("shared roster group %s@%s: %w", name, host, err)
	}
	return g, true, nil
}

// existingGroup is group, refusing one that does not exist.
func (a *srgAdmin) existingGroup(host, name string) (srgGroup, error) {
	g, ok, err := a.group(host, name)
	if err == nil && !ok {
		err = fmt.Errorf("shared roster group %s does not exist at %s", name, host)
	}
	return g, err
}

func (a *srgAdmin) put(ctx context.Context, host, name string, g srgGroup) error {
	b, _ := json.Marshal(g)
	return a.s.Store.Apply(ctx, storage.Put(SRGTable, srgGroupKey(host, name), b))
}

// srgGroupName checks a group identifier.
func srgGroupName(g string) (string, error) {
	g = strings.TrimSpace(g)
	if g == "" || strings.ContainsAny(g, "\x00\n,") {
		return "", fmt.Errorf("invalid group identifier %q", g)
	}
	return g, nil
}

// catchUp makes this node's reads hold every commit made before it (a write
// through the log).
func (a *srgAdmin) catchUp(ctx context.Context) error {
	if err := a.s.Store.Apply(ctx, storage.Delete(SRGTable, "\x00barrier")); err != nil {
		return fmt.Errorf("catching up with the cluster: %w", err)
	}
	return nil
}

// reconcile brings the rosters to what the groups say.
func (a *srgAdmin) reconcile(ctx context.Context) error {
	t, err := a.table()
	if err != nil {
		return err
	}
	if err := a.catchUp(ctx); err != nil {
		return err
	}
	groups := map[string]map[string]srgGroup{} // host -> name -> group
	var had []struct{ user, contact string }
	have := map[[2]string][]string{}
	err = t.Scan("", func(k string, v []byte) bool {
		parts := strings.Split(k, "\x00")
		if len(parts) != 3 {
			return true
		}
		switch parts[0] {
		case "g":
			var g srgGroup
			if json.Unmarshal(v, &g) == nil {
				if groups[parts[1]] == nil {
					groups[parts[1]] = map[string]srgGroup{}
				}
				groups[parts[1]][parts[2]] = g
			}
		case "i":
			var labels []string
			_ = json.Unmarshal(v, &labels)
			have[[2]string{parts[1], parts[2]}] = labels
			had = append(had, struct{ user, contact string }{parts[1], parts[2]})
		}
		return true
	})
	if err != nil {
		return err
	}
	// Members whose accounts exist (an account removed since drops out).
	exists := map[string]bool{}
	live := func(j string) bool {
		if v, ok := exists[j]; ok {
			return v
		}
		u, d, _ := strings.Cut(j, "@")
		_, _, err := a.s.existing(ctx, u, d)
		exists[j] = err == nil
		return exists[j]
	}
	want := map[[2]string][]string{}
	for _, gs := range groups {
		for _, g := range gs {
			for _, u := range g.Members {
				if !live(u) {
					continue
				}
				for _, dn := range g.Display {
					d, ok := gs[dn]
					if !ok {
						continue
					}
					label := d.Label
					if label == "" {
						label = dn
					}
					for _, c := range d.Members {
						if c == u || !live(c) {
							continue
						}
						k := [2]string{u, c}
						if !slices.Contains(want[k], label) {
							want[k] = append(want[k], label)
						}
					}
				}
			}
		}
	}
	var errs []error
	keys := make([][2]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i][0]+"\x00"+keys[i][1] < keys[j][0]+"\x00"+keys[j][1] })
	for _, k := range keys {
		labels := want[k]
		sort.Strings(labels)
		old, tracked := have[k]
		if tracked && slices.Equal(old, labels) {
			continue
		}
		if err := a.share(ctx, k[0], k[1], labels, tracked); err != nil {
			errs = append(errs, err)
		}
	}
	for _, h := range had {
		if _, ok := want[[2]string{h.user, h.contact}]; !ok {
			if err := a.unshare(ctx, h.user, h.contact); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// userKeyOf is the roster's user key of a local bare JID.
func (a *srgAdmin) userKeyOf(bare string) string {
	u, d, _ := strings.Cut(bare, "@")
	return a.s.userKey(u, d)
}

// share puts contact in user's roster under labels (subscription both), unless
// the user has it already as an item of their own (tracked: this code put
// it there), and sends user the contact's current presence.
func (a *srgAdmin) share(ctx context.Context, user, contact string, labels []string, tracked bool) error {
	key := a.userKeyOf(user)
	if _, own := a.ros.Get(key, contact); own && !tracked {
		return nil // the user's own item stays as it is
	}
	name, _, _ := strings.Cut(contact, "@")
	if err := a.ros.SetItem(ctx, key, roster.Item{JID: contact, Name: name, Groups: labels, Sub: roster.SubBoth}); err != nil {
		return fmt.Errorf("roster of %s: %w", user, err)
	}
	b, _ := json.Marshal(labels)
	if err := a.s.Store.Apply(ctx, storage.Put(SRGTable, srgItemKey(user, contact), b)); err != nil {
		return err
	}
	if !tracked {
		a.sendPresence(ctx, contact, user, false)
	}
	return nil
}

// unshare removes the contact the groups put in user's roster.
func (a *srgAdmin) unshare(ctx context.Context, user, contact string) error {
	if _, err := a.ros.RemoveItem(ctx, a.userKeyOf(user), contact); err != nil {
		return fmt.Errorf("roster of %s: %w", user, err)
	}
	a.sendPresence(ctx, contact, user, true)
	return a.s.Store.Apply(ctx, storage.Delete(SRGTable, srgItemKey(user, contact)))
}

// sendPresence sends user the current presence of each available session of
// contact (unavailable: that they went away for user).
func (a *srgAdmin) sendPresence(ctx context.Context, contact, user string, unavailable bool) {
	cj, err := jid.Parse(contact)
	if err != nil {
		return
	}
	for _, sess := range a.s.Router.Sessions(cj) {
		p := sess.Presence()
		if p == nil {
			continue
		}
		out := p.Copy()
		if unavailable {
			out = xmlstream.New(xmlstream.NSClient, "presence", "type", "unavailable")
		}
		out.SetAttr("from", sess.JID().String())
		out.SetAttr("to", user)
		a.s.Router.Route(ctx, out)
	}
}

func (s *Server) srgHandlers(ros *roster.Module) *srgAdmin {
	a := &srgAdmin{s: s, ros: ros}
	h := s.Admin
	// change runs fn under the node's srg lock and then reconciles the rosters.
	change := func(ctx context.Context, fn func() error) error {
		a.mu.Lock()
		defer a.mu.Unlock()
		if _, err := a.table(); err != nil {
			return err
		}
		if err := a.catchUp(ctx); err != nil {
			return err
		}
		if err := fn(); err != nil {
			return err
		}
		return a.reconcile(ctx)
	}
	usage := func(args []string, n int, u string) error {
		if len(args) != n {
			return errors.New("usage: " + u)
		}
		return nil
	}
	h.Handle("srg_create", func(ctx context.Context, args []string) (any, error) {
		if err := usage(args, 5, "srg_create GROUP HOST LABEL DESCRIPTION DISPLAY"); err != nil {
			return nil, err
		}
		host, err := s.servedHost(args[1])
		if err != nil {
			return nil, err
		}
		name, err := srgGroupName(args[0])
		if err != nil {
			return nil, err
		}
		// DISPLAY: group identifiers separated by commas (ejabberdctl's list
		// form) or by \n (its older form).
		var display []string
		for _, f := range strings.FieldsFunc(strings.ReplaceAll(args[4], `\n`, "\n"), func(r rune) bool { return r == ',' || r == '\n' }) {
			if f = strings.TrimSpace(f); f != "" && !slices.Contains(display, f) {
				display = append(display, f)
			}
		}
		err = change(ctx, func() error {
			for _, d := range display {
				if d == name {
					continue
				}
				if _, ok, err := a.group(host, d); err != nil {
					return err
				} else if !ok {
					return fmt.Errorf("displayed group %s does not exist at %s", d, host)
				}
			}
			g, _, err := a.group(host, name)
			if err != nil {
				return err
			}
			g.Label, g.Desc, g.Display = args[2], args[3], display
			return a.put(ctx, host, name, g)
		})
		if err != nil {
			return nil, err
		}
		return fmt.Sprintf("shared roster group %s created at %s", name, host), nil
	})
	h.Handle("srg_delete", func(ctx context.Context, args []string) (any, error) {
		if err := usage(args, 2, "srg_delete GROUP HOST"); err != nil {
			return nil, err
		}
		host, err := s.servedHost(args[1])
		if err != nil {
			return nil, err
		}
		err = change(ctx, func() error {
			if _, err := a.existingGroup(host, args[0]); err != nil {
				return err
			}
			return s.Store.Apply(ctx, storage.Delete(SRGTable, srgGroupKey(host, args[0])))
		})
		if err != nil {
			return nil, err
		}
		return fmt.Sprintf("shared roster group %s deleted at %s", args[0], host), nil
	})
	h.Handle("srg_list", func(ctx context.Context, args []string) (any, error) {
		if err := usage(args, 1, "srg_list HOST"); err != nil {
			return nil, err
		}
		host, err := s.servedHost(args[0])
		if err != nil {
			return nil, err
		}
		t, err := a.table()
		if err != nil {
			return nil, err
		}
		if err := a.catchUp(ctx); err != nil {
			return nil, err
		}
		out := []string{}
		prefix := "g\x00" + host + "\x00"
		err = t.Scan(prefix, func(k string, _ []byte) bool {
			out = append(out, strings.TrimPrefix(k, prefix))
			return true
		})
		return out, err
	})
	// read resolves GROUP HOST to an existing group, after catching up.
	read := func(ctx context.Context, args []string, u string) (srgGroup, error) {
		if err := usage(args, 2, u); err != nil {
			return srgGroup{}, err
		}
		host, err := s.servedHost(args[1])
		if err != nil {
			return srgGroup{}, err
		}
		if _, err := a.table(); err != nil {
			return srgGroup{}, err
		}
		if err := a.catchUp(ctx); err != nil {
			return srgGroup{}, err
		}
		return a.existingGroup(host, args[0])
	}
	h.Handle("srg_get_info", func(ctx context.Context, args []string) (any, error) {
		g, err := read(ctx, args, "srg_get_info GROUP HOST")
		if err != nil {
			return nil, err
		}
		return []map[string]string{
			{"key": "label", "value": g.Label},
			{"key": "displayed_groups", "value": strings.Join(g.Display, ", ")},
			{"key": "description", "value": g.Desc},
		}, nil
	})
	h.Handle("srg_get_members", func(ctx context.Context, args []string) (any, error) {
		g, err := read(ctx, args, "srg_get_members GROUP HOST")
		if err != nil {
			return nil, err
		}
		return append([]string{}, g.Members...), nil
	})
	// member is srg_user_add and srg_user_del: USER HOST GROUP GROUPHOST.
	member := func(name string, add bool) {
		h.Handle(name, func(ctx context.Context, args []string) (any, error) {
			if err := usage(args, 4, name+" USER HOST GROUP GROUPHOST"); err != nil {
				return nil, err
			}
			var u, d string
			var err error
			if add {
				u, d, err = s.existing(ctx, args[0], args[1])
			} else {
				u, d, err = s.account(args[0], args[1])
			}
			if err != nil {
				return nil, err
			}
			host, err := s.servedHost(args[3])
			if err != nil {
				return nil, err
			}
			bare := u + "@" + d
			err = change(ctx, func() error {
				g, err := a.existingGroup(host, args[2])
				if err != nil {
					return err
				}
				i, found := slices.BinarySearch(g.Members, bare)
				switch {
				case add && !found:
					g.Members = slices.Insert(g.Members, i, bare)
				case !add && found:
					g.Members = slices.Delete(g.Members, i, i+1)
				default:
					return nil
				}
				return a.put(ctx, host, args[2], g)
			})
			if err != nil {
				return nil, err
			}
			if add {
				return fmt.Sprintf("%s added to shared roster group %s at %s", bare, args[2], host), nil
			}
			return fmt.Sprintf("%s removed from shared roster group %s at %s", bare, args[2], host), nil
		})
	}
	member("srg_user_add", true)
	member("srg_user_del", false)
	return a
}
