package discovery

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Status is a member's state as the gossip layer sees it.
type Status string

const (
	StatusAlive   Status = "alive"   // answering probes
	StatusSuspect Status = "suspect" // missed probes; declared failed unless it refutes in time
	StatusFailed  Status = "failed"  // declared dead by failure detection (~1 s)
	StatusLeft    Status = "left"    // left gracefully (stop, drain, leave)
)

// Role says what a member is for.
type Role string

const (
	RoleNode    Role = "node"    // serves XMPP and votes/replicates
	RoleWitness Role = "witness" // votes only, serves no XMPP
)

// Cluster states a member advertises about its raft membership (Tags.Cluster).
const (
	ClusterNone          = ""              // not (yet) part of a raft cluster
	ClusterBootstrapping = "bootstrapping" // about to bootstrap a new cluster (the bootstrap rule chose it)
	ClusterMember        = "member"        // its store has joined (or bootstrapped) a cluster
)

// Tags is the metadata every member gossips about itself. The local node's tags
// are changed with View.UpdateTags; changes reach the other members within about
// one gossip round (tag pushes are coalesced to at most one per TagPushInterval).
type Tags struct {
	Role        Role   // node or witness
	ClusterAddr string // host:port peers dial for raft and the inter-node bus (advertised)
	C2SPort     int    // STARTTLS client port (0: no listener)
	C2STLSPort  int    // direct-TLS client port, XEP-0368 (0: no listener)
	InService   bool   // may take client traffic and VIPs (SLB's "inservice")
	Storage     string // storage mode: durable, ram-only, degraded-ram, read-only ("" before the store starts)
	Cluster     string // raft membership: ClusterNone, ClusterBootstrapping, ClusterMember
	Version     string // xmppd version
	Priority    int    // VIP/DNS preference, higher first (keepalived's priority)
	Load        int    // client sessions on this node
	Health      string // "ok" or a short reason it is not healthy
	Draining    bool   // moving its sessions away; take no new clients
}

// Member is one node of the cluster as seen through gossip.
type Member struct {
	Name    string         // node name (--node-name), unique in the cluster
	Addr    netip.AddrPort // gossip (serf) address
	Status  Status
	Tags    Tags
	DNSName string    // reverse DNS (PTR) name of Addr's address, if one was found
	FoundBy string    // how this node first learned of it: self, seed, dns, scan, gossip
	Since   time.Time // when Status last changed (as seen by this node)
}

// Healthy reports whether the member is alive, in service, not draining and
// reports itself healthy: what VIP placement and DNS publishing want.
func (m Member) Healthy() bool {
	return m.Status == StatusAlive && m.Tags.InService && !m.Tags.Draining &&
		(m.Tags.Health == "" || m.Tags.Health == "ok")
}

// Host returns the member's address without the port (for A/AAAA records).
func (m Member) Host() netip.Addr { return m.Addr.Addr() }

// View is the cluster membership seen from this node. Implementations are safe
// for concurrent use.
type View interface {
	// Local returns this node as a member (Status alive while running).
	Local() Member
	// Members returns every known member including this node, sorted by name;
	// failed and left members stay listed until gossip reaps them.
	Members() []Member
	// Subscribe returns a channel that receives a value after any change of the
	// membership or of a member's tags (coalesced: one pending value at most;
	// re-read Members on receipt), and a function that ends the subscription.
	Subscribe() (<-chan struct{}, func())
	// SetTags replaces the local node's tags.
	SetTags(Tags) error
	// UpdateTags changes the local node's tags in place (read-modify-write
	// under the view's lock), e.g. UpdateTags(func(t *Tags){ t.Load = n }).
	UpdateTags(func(*Tags)) error
}

// SortMembers sorts members by name.
func SortMembers(ms []Member) {
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
}

// Serf tag keys. Serf limits a node's metadata to 512 bytes, so the keys are short.
const (
	tagRole      = "role"
	tagCluster   = "ca"
	tagC2S       = "c2s"
	tagC2STLS    = "c2st"
	tagInService = "ins"
	tagStorage   = "st"
	tagRaft      = "cl"
	tagVersion   = "v"
	tagPriority  = "pri"
	tagLoad      = "load"
	tagHealth    = "h"
	tagDraining  = "dr"
)

// Encode returns the tags as serf tags.
func (t Tags) Encode() map[string]string {
	m := map[string]string{tagRole: string(t.Role), tagCluster: t.ClusterAddr}
	put := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	putInt := func(k string, v int) {
		if v != 0 {
			m[k] = strconv.Itoa(v)
		}
	}
	putBool := func(k string, v bool) {
		if v {
			m[k] = "1"
		}
	}
	putInt(tagC2S, t.C2SPort)
	putInt(tagC2STLS, t.C2STLSPort)
	putBool(tagInService, t.InService)
	put(tagStorage, t.Storage)
	put(tagRaft, t.Cluster)
	put(tagVersion, t.Version)
	putInt(tagPriority, t.Priority)
	putInt(tagLoad, t.Load)
	put(tagHealth, t.Health)
	putBool(tagDraining, t.Draining)
	return m
}

// DecodeTags reads serf tags written by Encode; unknown keys are ignored and
// malformed numbers read as 0, so members of other versions stay visible.
func DecodeTags(m map[string]string) Tags {
	num := func(k string) int { n, _ := strconv.Atoi(m[k]); return n }
	return Tags{
		Role: Role(m[tagRole]), ClusterAddr: m[tagCluster],
		C2SPort: num(tagC2S), C2STLSPort: num(tagC2STLS),
		InService: m[tagInService] == "1", Storage: m[tagStorage], Cluster: m[tagRaft],
		Version: m[tagVersion], Priority: num(tagPriority), Load: num(tagLoad),
		Health: m[tagHealth], Draining: m[tagDraining] == "1",
	}
}
