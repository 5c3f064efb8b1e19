package replicated

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"xedge/internal/backoff"
	"xedge/storage"
	"xedge/storage/tables"
)

// RAM tables (copy type ram) are replicated through raft like disc tables, but
// never reach a device: stores writes entries with their RAM ops redacted and
// snapshots without RAM rows (see stores.go). A process that restores from its
// device therefore lacks RAM rows, and knows it: its FSM marks its RAM tables
// not valid (fsm.ramValid). Such a node skips RAM ops, shows its RAM tables as
// unsynced, and becomes valid again by
//
//   - resync: it proposes a sync marker ('S'); every valid node captures its
//     tables (an O(1) immutable view) when it applies the marker; the asking
//     node, applying its own marker, fetches that image from a valid peer over
//     the cluster transport and installs it before applying the next entry;
//     on failure it stays invalid and tries again with a new marker (backoff);
//   - a new RAM epoch ('E'): when the leader's RAM tables are not valid, it has
//     been leader for ramEpochWait, a majority of the voters reported recently
//     and none of the members reports valid ones (a full-cluster restart), it
//     proposes an epoch: every node empties its RAM tables and they are valid
//     (logged once per epoch);
//   - an InstallSnapshot from a node whose snapshot carried valid RAM rows.
//
// A leader whose RAM tables are not valid resyncs like any node and, meanwhile,
// refuses batches that write RAM tables (retried by the caller), so that the
// outcome of a conditional RAM batch is always decided by a valid leader.

// ramEpochWait is how long a leader whose RAM tables are not valid waits for a
// member with valid ones before starting a new RAM epoch (it also needs
// recent reports from a majority of the voters, all unsynced).
func (s *Store) ramEpochWait() time.Duration {
	return max(8*s.cfg.ReportInterval, 2*s.cfg.HeartbeatTimeout)
}

// ramState is this node's RAM tables' state as shown and reported.
func (s *Store) ramState() string {
	if s.fsm.valid() {
		return "synced"
	}
	return "unsynced"
}

// markedCommand marks every op with the copy type this node believes its
// table has. A table this node does not know yet (its Declare, committed
// through another node, is not applied here yet) is waited for a moment, then
// marked RAM, so that its content is redacted on every device whatever the
// outcome; the FSM answers ErrNoTable, or ErrCopyMismatch if it is a disc
// table (Apply then marks again).
func (s *Store) markedCommand(ctx context.Context, ops []storage.Op) tables.Command {
	for _, op := range ops {
		for i := 0; i < 50 && ctx.Err() == nil; i++ {
			if _, ok := s.fsm.state.Spec(op.Table); ok {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	cmd := tables.ApplyCommand(ops...)
	cmd.Marks = make([]tables.Mark, len(ops))
	for i, op := range ops {
		spec, ok := s.fsm.state.Spec(op.Table)
		if !ok {
			spec.Copy = storage.RAM
		}
		cmd.Marks[i] = tables.MarkFor(spec.Copy)
	}
	return cmd
}

// fetchRAM gets the tables captured at sync marker index from a valid peer:
// the leader first, then every other member. It runs on raft's FSM goroutine,
// so it must not call into raft (no GetConfiguration) and is bounded in time.
func (s *Store) fetchRAM(index uint64, extra []string) (*tables.State, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	go func() {
		select {
		case <-s.stopCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	var addrs []string
	if addr, _ := s.leaderAddr.Load().(string); addr != "" && addr != s.addr {
		addrs = append(addrs, addr)
	}
	for id, m := range s.fsm.membersCopy() {
		if raft.ServerID(id) != s.id && m.Addr != "" && m.Addr != s.addr && (len(addrs) == 0 || m.Addr != addrs[0]) {
			addrs = append(addrs, m.Addr)
		}
	}
	var errs []error
	for _, addr := range addrs {
		if ctx.Err() != nil {
			break
		}
		cctx, ccancel := context.WithTimeout(ctx, 4*time.Second)
		resp, err := s.rpc.call(cctx, addr, &rpcRequest{Op: "ramimage", Index: index, Tables: extra})
		ccancel()
		if err == nil && resp.Err != "" {
			err = errors.New(resp.Err)
		}
		if err == nil {
			img, rerr := tables.ReadSnapshot(bytes.NewReader(resp.Image))
			if rerr == nil {
				return img, nil
			}
			err = rerr
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	if len(errs) == 0 {
		errs = append(errs, errors.New("no peer to ask"))
	}
	return nil, fmt.Errorf("replicated: fetch RAM tables at %d: %w", index, errors.Join(errs...))
}

// maxImage bounds a RAM image sent in one RPC frame (64 MiB, base64 in JSON).
const maxImage = 46 << 20

// handleRAMImage answers a peer's fetch of the image captured at a sync marker.
func (s *Store) handleRAMImage(req *rpcRequest) *rpcResponse {
	done := make(chan struct{})
	timer := time.AfterFunc(3*time.Second, func() { close(done) })
	defer timer.Stop()
	if !s.fsm.waitApplied(req.Index, done) {
		return &rpcResponse{Err: fmt.Sprintf("sync marker %d not applied here yet", req.Index)}
	}
	view, ok := s.fsm.image(req.Index)
	if !ok {
		return &rpcResponse{Err: fmt.Sprintf("RAM tables were not valid here at %d", req.Index)}
	}
	var buf bytes.Buffer
	if _, err := view.WriteTo(&buf, wantTables(req.Tables)); err != nil {
		return &rpcResponse{Err: err.Error()}
	}
	if buf.Len() > maxImage {
		return &rpcResponse{Err: fmt.Sprintf("RAM tables too large to send in one frame (%d bytes, limit %d)", buf.Len(), maxImage)}
	}
	return &rpcResponse{Image: buf.Bytes()}
}

// ramLoop makes this node's RAM tables valid again when they are not: a
// resync from a peer, or (on a leader no valid member reports to) a new RAM
// epoch. It returns when ctx ends.
func (s *Store) ramLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.ReportInterval)
	defer t.Stop()
	bo := backoff.Backoff{Min: 2 * s.cfg.ReportInterval, Max: max(5*time.Second, 2*s.cfg.ReportInterval)}
	var next time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.fsm.valid() {
			bo.Reset()
			next = time.Time{}
			continue
		}
		if s.leaving.Load() || s.holdResync.Load() || !s.joined() {
			continue
		}
		if s.raft.State() == raft.Leader && !s.validPeer() {
			s.ap.mu.Lock()
			since := s.ap.leaderSince
			s.ap.mu.Unlock()
			if since.IsZero() || time.Since(since) < s.ramEpochWait() || time.Now().Before(next) {
				continue
			}
			s.log.Warn("no member of the cluster has valid RAM tables (full-cluster restart?): starting a new RAM epoch; RAM tables are empty",
				"waited", s.ramEpochWait())
			if err := s.waitFuture(s.raft.Apply(append([]byte{entryRAMEpoch}, s.id...), 5*time.Second)); err != nil {
				s.log.Warn("new RAM epoch not committed; will retry", "err", err)
			}
			next = time.Now().Add(bo.Peek())
			continue
		}
		if time.Now().Before(next) {
			continue
		}
		next = time.Now().Add(bo.Next())
		if _, err := s.submit(ctx, &rpcRequest{Op: "apply", Cmd: append([]byte{entryRAMSync}, s.fsm.self...)}); err != nil {
			s.log.Debug("propose RAM sync marker", "err", err)
		}
	}
}

// validPeer reports, on the leader, whether another member of the
// configuration recently reported valid RAM tables, or whether it is too early
// to tell: fewer than a majority of the voters (this node included) have
// reported recently.
func (s *Store) validPeer() bool {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return true // unknown: do not start an epoch
	}
	s.ap.mu.Lock()
	defer s.ap.mu.Unlock()
	voters, heard := 0, 0
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			voters++
		}
		if srv.ID == s.id {
			if srv.Suffrage == raft.Voter {
				heard++
			}
			continue
		}
		r, ok := s.ap.reports[srv.ID]
		fresh := ok && time.Since(s.ap.seen[srv.ID]) < 3*s.cfg.ReportInterval
		if fresh && r.RAM == "synced" {
			return true
		}
		if fresh && srv.Suffrage == raft.Voter {
			heard++
		}
	}
	return heard <= voters/2
}

// snapshotLoop takes a local snapshot when the FSM asks (a table's copy type
// changed, or tables that became disc while RAM was not valid were resynced).
func (s *Store) snapshotLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.snapKick:
		}
		if err := s.waitFuture(s.raft.Snapshot()); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
			s.log.Warn("local snapshot failed", "err", err)
		}
	}
}

func (s *Store) requestSnapshot() {
	select {
	case s.snapKick <- struct{}{}:
	default:
	}
}

// snapshotCovering takes local snapshots until the one kept covers index
// (bounded by ctx), so that a table just changed from RAM to disc has its rows
// on this node's device.
func (s *Store) snapshotCovering(ctx context.Context, index uint64) error {
	for range 20 {
		if s.st.snapshotIndex() >= index {
			return nil
		}
		err := s.waitFuture(s.raft.Snapshot())
		if err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
			return fmt.Errorf("replicated: snapshot after RAM -> disc: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("replicated: snapshot after RAM -> disc: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("replicated: no snapshot covering index %d", index)
}
