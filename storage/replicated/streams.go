package replicated

import (
	"context"
	"fmt"
	"net"
	"sync"

	"xedge/storage"
	"xedge/storage/ephemeral"
)

// Other stream kinds on the cluster port. A component outside this package
// (the xmppd cluster bus) registers a handler for its own stream kind and
// dials peers with the same cluster-key-derived TLS identity as raft and the
// RPCs, so nothing without the cluster key reaches it either.

var streamRegistry = struct {
	sync.Mutex
	m map[*mux]map[byte]func(net.Conn)
}{m: map[*mux]map[byte]func(net.Conn){}}

// HandleStream registers fn for inbound connections of stream kind kind
// (any byte but 'R' and 'F', which are raft's and the RPCs'). fn owns the
// connection while it runs; the connection is closed when fn returns or the
// store stops. Register before Start.
func (s *Store) HandleStream(kind byte, fn func(net.Conn)) error {
	if kind == streamRaft || kind == streamRPC {
		return fmt.Errorf("replicated: stream kind %q is reserved", kind)
	}
	streamRegistry.Lock()
	defer streamRegistry.Unlock()
	if streamRegistry.m[s.mux] == nil {
		streamRegistry.m[s.mux] = map[byte]func(net.Conn){}
	}
	streamRegistry.m[s.mux][kind] = fn
	return nil
}

// DialStream opens an authenticated, encrypted stream of kind to a peer's
// cluster address. A peer without the cluster key fails the handshake.
func (s *Store) DialStream(ctx context.Context, addr string, kind byte) (net.Conn, error) {
	return dialCluster(ctx, addr, s.mux.tls, kind)
}

// Incarnation is this process's incarnation: the tag of its ephemeral rows.
func (s *Store) Incarnation() uint64 { return s.inc }

// other serves a stream kind registered with HandleStream.
func (m *mux) other(kind byte, c net.Conn) {
	streamRegistry.Lock()
	fn := streamRegistry.m[m][kind]
	streamRegistry.Unlock()
	if fn == nil || !m.track(c, true) {
		_ = c.Close()
		return
	}
	fn(c)
	m.track(c, false)
	_ = c.Close()
}

// EphemeralDropRows is EphemeralDrop with the rows that were dropped.
type EphemeralDropRows func(node string, incarnation uint64, rows []ephemeral.Change, responsible bool)

// OnEphemeralDropRows registers fn, called like OnEphemeralDrop's callback
// but with a copy of the dropped rows (every table). Set it before Start.
func (s *Store) OnEphemeralDropRows(fn EphemeralDropRows) {
	dropRowsFns.Store(s, fn)
}

// dropRowsFns holds the OnEphemeralDropRows callbacks by store.
var dropRowsFns sync.Map // *Store -> EphemeralDropRows

func (s *Store) dropRowsFn() EphemeralDropRows {
	if v, ok := dropRowsFns.Load(s); ok {
		return v.(EphemeralDropRows)
	}
	return nil
}

// nodeRows copies node's rows of incarnation at most inc, when a rows
// callback wants them (before DropNode).
func (s *Store) nodeRows(node string, inc uint64) []ephemeral.Change {
	if s.dropRowsFn() == nil {
		return nil
	}
	var out []ephemeral.Change
	for _, info := range s.eph.Info() {
		s.eph.Table(info.Name).Scan("", func(r storage.Row) bool {
			if r.Node == node && r.Incarnation <= inc {
				out = append(out, ephemeral.Change{Table: info.Name, Row: r})
			}
			return true
		})
	}
	return out
}

// Member is one server of the raft configuration, for `xmppctl cluster members`.
type Member struct {
	Name  string `json:"name"`
	ID    string `json:"id"`
	Addr  string `json:"addr"`
	State string `json:"state"` // voter|nonvoter|witness/durable|ram-only[/leader]
}

// Members lists the servers of the raft configuration.
func (s *Store) Members() []Member {
	if s.raft == nil {
		return nil
	}
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	states := s.replicaStates(false)
	var out []Member
	for _, srv := range f.Configuration().Servers {
		n := nameOf(srv.ID)
		out = append(out, Member{Name: n, ID: string(srv.ID), Addr: string(srv.Address), State: states[n]})
	}
	return out
}

// Forget removes the member named name (a node that is gone for good) from
// the cluster configuration through the leader.
func (s *Store) Forget(ctx context.Context, name string) error {
	if name == s.cfg.NodeName {
		return fmt.Errorf("replicated: forget: %s is this node (use leave)", name)
	}
	for _, m := range s.Members() {
		if m.Name == name {
			if _, err := s.submit(ctx, &rpcRequest{Op: "leave", ID: m.ID}); err != nil {
				return fmt.Errorf("replicated: forget %s: %w", name, err)
			}
			return nil
		}
	}
	return fmt.Errorf("replicated: forget: no member named %q", name)
}
