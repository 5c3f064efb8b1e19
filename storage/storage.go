// Package storage owns xedge's tables: the API xmppd's modules use, and its
// implementations.
//
// # The API
//
// A Store holds named tables of two kinds:
//
//   - Durable tables (Store.Durable) hold account data: users, rosters, offline
//     messages, vCards, private XML, block lists, cluster config. Each is declared
//     once with a TableSpec whose Copy is Disc (default: kept on the node's block
//     device and replicated) or RAM (replicated, never written to disk, empty after
//     a full-cluster restart — Mnesia's ram_copies). Reads are local and never block
//     on the network. Writes are batches applied atomically, in one order on every
//     node; Apply returns once the batch is committed (single node: persisted; with
//     raft: committed by a quorum and applied locally, so a read after Apply sees it).
//
//   - Ephemeral tables (Store.Ephemeral) hold node-owned soft state: sessions,
//     routes, presence. Each node writes only its own rows, tagged with node ID and
//     incarnation; reads return the rows of every live node. When a node dies its
//     rows disappear everywhere. They never touch raft or disk.
//
// Keys are strings and values opaque bytes; modules encode their own records. Keys
// sort bytewise and Scan walks a prefix in key order, so modules build composite keys
// such as "alice@example.org\x00bob@example.org".
//
// # Errors
//
// ErrConflict: a Cond in the batch did not hold (nothing was applied).
// ErrUnavailable: the write could not be committed now (no leader, no quorum, store
// stopped, or read-only mode during storage loss); the caller answers the client
// with a <wait/> error and may retry. A key over 64 KiB, a value over 64 MiB or a
// batch over 1Mi ops is refused before anything is written (the error wraps
// tables.ErrTooLarge). Every other error is a bug or corruption and is wrapped
// with %w.
//
// # Semantics, precisely
//
//   - Declare is idempotent; declaring an existing table with another copy type
//     changes it. Disc -> RAM keeps the rows in RAM and drops them from disk at the
//     next snapshot (so they are gone after a restart); RAM -> disc writes them to
//     disk before Declare returns. Table specs (name and copy type) are persisted,
//     so after a restart every table is known again, RAM tables empty.
//   - Apply checks every Op's table (ErrNoTable) and every Cond against the state
//     before the batch (ErrConflict, wrapping the table and key that failed), then
//     applies the Ops in order, all or none. An empty batch is a no-op. Once Apply
//     returns nil the batch survives a crash (disc tables) and every later read on
//     this node sees it.
//   - A batch that writes disc tables may not carry a Cond on a RAM table: RAM
//     ops never reach a disk, so replaying the batch could decide differently.
//     The replicated store refuses such a batch (the error wraps
//     tables.ErrRAMCondition); batches on RAM tables only, or with Conds on disc
//     tables only, are fine. If a Declare changes the copy type of a table while
//     a batch on it is in flight, the replicated store may refuse the batch with
//     ErrUnavailable (retry).
//   - RAM tables of the replicated store: a node restarted while the cluster
//     runs gets them back from a peer (until then TableInfo.RAM is "unsynced"
//     and its reads may miss rows); after a full-cluster restart they are empty.
//   - Reads (Table.Get/Scan/Count) see a consistent committed version and never
//     wait for disk or network. Get returns a copy; the value passed to a Scan
//     callback must not be modified. Scan holds no lock while calling fn, so fn may
//     call the store, even Apply. Keys sort bytewise.
//   - Ephemeral tables are created on first use. Put/Delete touch only this node's
//     rows; Get/Scan return the rows of every live node, in key order and then
//     node order. Each start of a node has a new, larger Incarnation.
//
// # Implementations
//
//   - storage/local: the single-node store. local.Open(ctx, local.Config{Dir, Node})
//     keeps every table in RAM and persists disc tables under Dir (--data) through
//     an append-only log of committed batches plus snapshots.
//   - storage/replicated: the raft-replicated store (issue 6) behind the same
//     interface, so xmppd's modules never change.
//
// Both are built from shared parts: storage/tables (the durable tables' state
// machine: commands, their encoding, snapshots — the raft FSM wraps it),
// storage/ephemeral (node-owned rows), storage/blockdev (file-backed and
// fault-injecting BlockDevices) and storage/blocklog (the crash-consistent
// log/stable/snapshot store on a BlockDevice that raft uses). Every
// implementation also satisfies Service (Start/Stop). See docs/storage.md.
//
// storage must not import xmppd, iscsi or init; it knows a block device only through
// the BlockDevice interface below.
package storage

import (
	"context"
	"errors"
)

// CopyType says where a durable table's replicas live, as Mnesia's copy types do.
type CopyType int

const (
	// Disc tables are replicated and persisted on each node's block device.
	Disc CopyType = iota
	// RAM tables are replicated but never persisted.
	RAM
)

func (c CopyType) String() string {
	switch c {
	case Disc:
		return "disc"
	case RAM:
		return "ram"
	}
	return "unknown"
}

// TableSpec declares a durable table.
type TableSpec struct {
	Name string
	Copy CopyType
}

// CondKind is a precondition on a key, checked atomically with the batch.
type CondKind int

const (
	// CondNone: no precondition.
	CondNone CondKind = iota
	// CondAbsent: the key must not exist.
	CondAbsent
	// CondPresent: the key must exist.
	CondPresent
)

// OpKind is what an Op does.
type OpKind int

const (
	OpPut OpKind = iota
	OpDelete
	// OpDeletePrefix deletes every key of Table beginning with Key.
	OpDeletePrefix
)

// Op is one write in a batch.
type Op struct {
	Kind  OpKind
	Table string
	Key   string
	Value []byte
	Cond  CondKind
}

// Put returns a put op.
func Put(table, key string, value []byte) Op {
	return Op{Kind: OpPut, Table: table, Key: key, Value: value}
}

// Delete returns a delete op.
func Delete(table, key string) Op { return Op{Kind: OpDelete, Table: table, Key: key} }

// DeletePrefix returns an op deleting every key with the prefix.
func DeletePrefix(table, prefix string) Op {
	return Op{Kind: OpDeletePrefix, Table: table, Key: prefix}
}

// If returns op with a precondition.
func (o Op) If(c CondKind) Op { o.Cond = c; return o }

var (
	// ErrConflict means a precondition failed; nothing in the batch was applied.
	ErrConflict = errors.New("storage: precondition failed")
	// ErrUnavailable means the write cannot be committed now; retry later.
	ErrUnavailable = errors.New("storage: unavailable")
	// ErrNoTable means the table was not declared.
	ErrNoTable = errors.New("storage: no such table")
)

// Store is the API xmppd uses. Implementations are safe for concurrent use.
type Store interface {
	// Declare makes sure a durable table exists with the given spec. Declaring an
	// existing table again is a no-op; changing its copy type is allowed.
	Declare(ctx context.Context, spec TableSpec) error
	// Durable returns a read handle on a declared durable table.
	Durable(name string) (Table, error)
	// Apply commits a batch atomically (see the package doc).
	Apply(ctx context.Context, ops ...Op) error
	// Ephemeral returns this node's view of a node-owned table, creating it.
	Ephemeral(name string) Ephemeral
	// Tables describes every table, for `xmppctl tables`.
	Tables() []TableInfo
	// Status describes the store, for `xmppctl storage`.
	Status() Status
}

// Service is a Store with its lifecycle, as the composition root holds it.
type Service interface {
	Store
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

// Table reads one durable table. Reads are local.
type Table interface {
	Get(key string) (value []byte, ok bool, err error)
	// Scan calls fn for each key with the prefix, in key order, until fn returns false.
	Scan(prefix string, fn func(key string, value []byte) bool) error
	// Count returns how many keys have the prefix.
	Count(prefix string) (int, error)
}

// SharedReader is what a Table may implement to read without a copy: GetShared
// returns the stored value itself, which the caller must not modify and which
// stays as it is for as long as it is kept (a later write stores a new value).
// The durable tables (storage/tables) implement it.
type SharedReader interface {
	GetShared(key string) (value []byte, ok bool, err error)
}

// GetShared reads key from t without a copy when t is a SharedReader, else
// with Get; either way the value must not be modified.
func GetShared(t Table, key string) ([]byte, bool, error) {
	if s, ok := t.(SharedReader); ok {
		return s.GetShared(key)
	}
	return t.Get(key)
}

// Stamped is what a Table may implement so that a reader can tell, without
// reading it again, that nothing changed: Stamp returns a comparable value that
// is == to an earlier one only if the table's contents are still what they were
// when that one was returned (a write to the table makes it differ; it may differ
// without a change). A reader that caches what it decoded from a table keeps the
// stamp it read before reading.
type Stamped interface {
	Stamp() any
}

// StampOf returns t's stamp, or nil if t does not implement Stamped (then a
// cached read cannot be validated by stamp).
func StampOf(t Table) any {
	if s, ok := t.(Stamped); ok {
		return s.Stamp()
	}
	return nil
}

// ReadBarrier is what a Store may implement whose reads can lag writes
// committed through other nodes (the replicated store: a follower applies a
// little after the leader): ReadBarrier returns once this node's reads see
// every write committed anywhere before the call — one round trip to the
// leader, no log entry. A store without it (single node) is always current.
type ReadBarrier interface {
	ReadBarrier(ctx context.Context) error
}

// CatchUp makes st's reads see every write committed before the call (see
// ReadBarrier); it returns at once for a store that is always current.
func CatchUp(ctx context.Context, st Store) error {
	if b, ok := st.(ReadBarrier); ok {
		return b.ReadBarrier(ctx)
	}
	return nil
}

// Row is one node's row in an ephemeral table.
type Row struct {
	Key         string
	Node        string
	Incarnation uint64
	Value       []byte
}

// Ephemeral is a node-owned soft-state table.
type Ephemeral interface {
	// Put writes this node's row for key.
	Put(key string, value []byte)
	// Delete removes this node's row for key.
	Delete(key string)
	// Get returns every live node's row for key.
	Get(key string) []Row
	// Scan calls fn for each row whose key has the prefix, until fn returns false.
	Scan(prefix string, fn func(Row) bool)
}

// TableInfo is one line of `xmppctl tables`.
type TableInfo struct {
	Name     string            `json:"name"`
	Kind     string            `json:"kind"` // "durable" or "ephemeral"
	Copy     string            `json:"copy"` // "disc", "ram" (durable) or "node" (ephemeral)
	Keys     int               `json:"keys"`
	Bytes    int64             `json:"bytes"`
	Replicas map[string]string `json:"replicas,omitempty"` // node -> state
	// RAM is, for a RAM table of a replicated store, whether this node's copy
	// is "synced" with the cluster or "unsynced" (restored from its device
	// without RAM rows, being resynced). Empty otherwise.
	RAM string `json:"ram,omitempty"`
}

// Status is `xmppctl storage`.
type Status struct {
	Mode       string `json:"mode"` // "durable", "ram-only", "degraded-ram", "read-only"
	Backend    string `json:"backend"`
	Generation uint64 `json:"generation"`
	Node       string `json:"node"`
	Leader     string `json:"leader,omitempty"`
	Role       string `json:"role,omitempty"` // voter, nonvoter, witness
	AppliedIdx uint64 `json:"applied_index"`
	LagEntries uint64 `json:"lag_entries"`
	Detail     string `json:"detail,omitempty"`
}

// BlockDevice is the only thing storage knows of a disk or LUN. iscsi.Device and a
// file both satisfy it (storage/blockdev has the file one).
type BlockDevice interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	// Sync makes every completed WriteAt durable.
	Sync() error
	Size() int64
	BlockSize() int
}
