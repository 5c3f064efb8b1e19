package offline

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"xedge/storage"
)

// purgeBatch bounds the deletes of one DeleteOlder write.
const purgeBatch = 1000

// DeleteOlder deletes every stored message (of every user and host) stored
// before cutoff and returns how many it deleted: ejabberdctl's
// delete_old_messages DAYS. A message's age is its key's timestamp, the time
// it was stored. The deletes are written in batches; a batch that fails
// leaves its messages (and the later ones) stored, and the error says how
// many were deleted before.
func (m *Module) DeleteOlder(ctx context.Context, cutoff time.Time) (int, error) {
	if m.tab == nil {
		return 0, fmt.Errorf("offline: not started")
	}
	// A write through the log first: this node's reads then hold every
	// message committed before the call, through whichever node.
	if err := m.h.Store().Apply(ctx, storage.Delete(Table, "\x00barrier")); err != nil {
		return 0, fmt.Errorf("offline: catching up with the cluster: %w", err)
	}
	var old []string
	err := m.tab.Scan("", func(k string, _ []byte) bool {
		if at, ok := storedAt(k); ok && at.Before(cutoff) {
			old = append(old, k)
		}
		return true
	})
	if err != nil {
		return 0, fmt.Errorf("offline: reading stored messages: %w", err)
	}
	n := 0
	for len(old) > 0 {
		k := min(len(old), purgeBatch)
		ops := make([]storage.Op, 0, k)
		for _, key := range old[:k] {
			ops = append(ops, storage.Delete(Table, key))
		}
		if err := m.h.Store().Apply(ctx, ops...); err != nil {
			return n, fmt.Errorf("offline: deleting old messages (%d deleted): %w", n, err)
		}
		n += k
		old = old[k:]
	}
	return n, nil
}

// storedAt is the time a message was stored, from its key
// ("user\x00<16 hex nanoseconds><8 hex sequence>").
func storedAt(key string) (time.Time, bool) {
	i := strings.LastIndexByte(key, 0)
	if i < 0 || len(key)-i-1 < 16 {
		return time.Time{}, false
	}
	ns, err := strconv.ParseUint(key[i+1:i+17], 16, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, int64(ns)), true
}
