package replicated

import (
	"context"
	"fmt"
	"sync"
	"time"

	"xedge/storage"
)

// barriers coalesces ReadBarrier calls: one round (a "barrier" request to
// the leader) at a time; a call joins the next round, which starts after the
// current one ends, so the index it waits for was read after the call began
// (the barrier's guarantee), and any number of concurrent calls — every
// session's late looks a second after a burst of logins — cost one round.
type barriers struct {
	mu     sync.Mutex
	cur    *barrierRound // in flight
	next   *barrierRound // waiting for cur to end
	rounds int           // rounds run (tests)
}

type barrierRound struct {
	done  chan struct{}
	index uint64
	err   error
}

// barrierTimeout bounds one round's wait for the leader.
const barrierTimeout = 5 * time.Second

// ReadBarrier implements storage.ReadBarrier: it asks the leader for its last
// log index (a round trip, no log entry; VerifyLeader there) and waits until
// this node has applied it.
func (s *Store) ReadBarrier(ctx context.Context) error {
	b := &s.bar
	b.mu.Lock()
	r := b.next
	if r == nil {
		r = &barrierRound{done: make(chan struct{})}
		b.next = r
		if b.cur == nil {
			s.startBarrierLocked()
		}
	}
	b.mu.Unlock()
	select {
	case <-r.done:
	case <-ctx.Done():
		return fmt.Errorf("%w: read barrier: %w", storage.ErrUnavailable, ctx.Err())
	}
	if r.err != nil {
		return r.err
	}
	if !s.fsm.waitApplied(r.index, ctx.Done()) {
		return fmt.Errorf("%w: read barrier: index %d not yet applied here: %w", storage.ErrUnavailable, r.index, ctx.Err())
	}
	return nil
}

// startBarrierLocked runs the next round (s.bar.mu held).
func (s *Store) startBarrierLocked() {
	b := &s.bar
	r := b.next
	b.cur, b.next = r, nil
	b.rounds++
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), barrierTimeout)
		resp, err := s.submit(ctx, &rpcRequest{Op: "barrier"})
		cancel()
		switch {
		case err != nil:
			r.err = err
		default:
			r.index, r.err = resp.Index, respError(resp)
		}
		b.mu.Lock()
		b.cur = nil
		if b.next != nil {
			s.startBarrierLocked()
		}
		b.mu.Unlock()
		close(r.done)
	}()
}
