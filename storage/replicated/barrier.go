package replicated

import (
	"context"
	"fmt"
	"time"

	"xedge/storage"
)

// barrierTimeout bounds one round's wait for the leader.
const barrierTimeout = 5 * time.Second

// ReadBarrier implements storage.ReadBarrier: it asks the leader for its last
// log index (a round trip, no log entry; VerifyLeader there) and waits until
// this node has applied it. Concurrent calls share rounds (package rounds):
// the index each waits for was read after it began, and any number of calls —
// every session's late looks a second after a burst of logins — cost a few
// requests to the leader.
func (s *Store) ReadBarrier(ctx context.Context) error {
	index, err := s.barriers.Do(ctx)
	if err != nil {
		return fmt.Errorf("%w: read barrier: %w", storage.ErrUnavailable, err)
	}
	if !s.fsm.waitApplied(index, ctx.Done()) {
		return fmt.Errorf("%w: read barrier: index %d not yet applied here: %w", storage.ErrUnavailable, index, ctx.Err())
	}
	return nil
}

// barrierRound asks the leader for the index a barrier waits for.
func (s *Store) barrierRound() (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), barrierTimeout)
	defer cancel()
	resp, err := s.submit(ctx, &rpcRequest{Op: "barrier"})
	if err != nil {
		return 0, err
	}
	return resp.Index, respError(resp)
}
