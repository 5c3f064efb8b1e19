// Package migrate moves accounts between XEP-0227 files (package piefxis) and
// xmppd's tables: users (SCRAM keys: plaintext passwords are derived into keys,
// SCRAM credentials of ejabberd and Prosody are kept as they are), rosters with
// pending requests, vCards, private XML, offline messages, block lists, and
// XEP-0016 privacy lists (kept as found, so an export gives them back; the
// default list's "deny this JID everything" items become block list entries,
// which is what xmppd enforces).
//
// Imports are written in large batches (one storage Apply per few thousand rows),
// so a raft-replicated store commits an import of 100,000 users in a few hundred
// log entries instead of a million. It is also a module: it owns the privacy
// table (declared at start, purged when a user is removed).
//
// Tables written: users (accounts), roster, roster_pending, roster_version,
// vcard, private, offline, blocklist, privacy (own: "user" -> stored query).
//
// It must not import the xmppd core; of the modules it imports only the table
// names and record types of roster, vcard, private, offline and blocking.
package migrate

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"xedge/internal/backoff"
	"xedge/storage"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/module"
)

// TablePrivacy holds each user's XEP-0016 privacy lists as imported.
const TablePrivacy = "privacy"

// Module declares the privacy table and purges it when a user is removed.
type Module struct{}

// New returns the module.
func New() *Module { return &Module{} }

// Name implements module.Module.
func (*Module) Name() string { return "migrate" }

// Start declares the privacy table.
func (*Module) Start(ctx context.Context, h module.Host) error {
	if err := modutil.Declare(ctx, h.Store(), TablePrivacy); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	modutil.RemoveUserOnDelete(h, nil, []string{TablePrivacy})
	return nil
}

// Stop implements module.Module.
func (*Module) Stop(context.Context) error { return nil }

// Progress is a running job's counters, read while it runs.
type Progress struct {
	Users       atomic.Int64 // users read (import) or written (export)
	Written     atomic.Int64 // users committed (import)
	BytesRead   atomic.Int64
	BytesTotal  atomic.Int64
	Batches     atomic.Int64
	RowsWritten atomic.Int64
	Total       atomic.Int64 // users to write (export)
}

// Summary is what a finished job did.
type Summary struct {
	Users       int    `json:"users"`
	Created     int    `json:"created"`
	Existing    int    `json:"existing"` // accounts that existed: credentials kept, data merged
	Derived     int    `json:"derived"`  // plaintext passwords turned into SCRAM keys
	NoPassword  int    `json:"no_password"`
	RosterItems int    `json:"roster_items"`
	Pending     int    `json:"pending"`
	VCards      int    `json:"vcards"`
	Private     int    `json:"private"`
	Offline     int    `json:"offline"`
	Privacy     int    `json:"privacy"`
	Blocked     int    `json:"blocked"`
	OtherHosts  int    `json:"other_hosts"` // users of hosts this server does not serve (skipped on request)
	Skipped     int    `json:"skipped"`     // sections not understood (see Warnings)
	Batches     int    `json:"batches"`
	Rows        int    `json:"rows"`
	File        string `json:"file,omitempty"`
	// Files are the files an export wrote (the main file last); Hosts the
	// users imported or exported per host.
	Files    []string       `json:"files,omitempty"`
	Hosts    map[string]int `json:"hosts,omitempty"`
	Warnings []string       `json:"warnings,omitempty"`
	Seconds  float64        `json:"seconds"`
}

// maxWarnings bounds Summary.Warnings; the rest are counted.
const maxWarnings = 50

type warnings struct {
	mu   sync.Mutex
	list []string
	more int
}

func (w *warnings) add(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.list) < maxWarnings {
		w.list = append(w.list, fmt.Sprintf(format, args...))
		return
	}
	w.more++
}

func (w *warnings) result() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := append([]string(nil), w.list...)
	if w.more > 0 {
		out = append(out, fmt.Sprintf("... and %d more", w.more))
	}
	return out
}

// applyRetry applies a batch, retrying while the store is unavailable (a raft
// leader election) for up to a minute.
func applyRetry(ctx context.Context, st storage.Store, ops []storage.Op) error {
	retry := backoff.Backoff{Min: 50 * time.Millisecond, Max: 2 * time.Second}
	deadline := time.Now().Add(time.Minute)
	for {
		err := st.Apply(ctx, ops...)
		if err == nil || !isUnavailable(err) || time.Now().After(deadline) {
			return err
		}
		if err := retry.Wait(ctx); err != nil {
			return err
		}
	}
}
