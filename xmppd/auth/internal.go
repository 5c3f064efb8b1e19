package auth

import (
	"context"

	"xedge/xmppd/accounts"
	"xedge/xmppd/internal/scram"
)

// internalBackend is today's accounts table (SCRAM keys only).
type internalBackend struct{ acc *accounts.Accounts }

func (b *internalBackend) Start(context.Context) error { return nil } // the server starts the accounts
func (b *internalBackend) Stop(context.Context) error  { return nil }

func (b *internalBackend) Check(_ context.Context, user, password string) (bool, error) {
	_, ok, err := b.acc.CheckPassword(user, password)
	return ok, err
}

func (b *internalBackend) Exists(ctx context.Context, user string) (bool, error) {
	return b.acc.Exists(ctx, user)
}

func (b *internalBackend) SCRAMMechanisms() []string { return []string{scram.SHA256, scram.SHA1} }

func (b *internalBackend) SCRAMKeys(_ context.Context, mech, user string) (scram.Keys, bool, error) {
	return b.acc.Lookup(mech)(user)
}

func (b *internalBackend) Create(ctx context.Context, user, password string) error {
	return b.acc.Create(ctx, user, password)
}

func (b *internalBackend) SetPassword(ctx context.Context, user, password string) error {
	return b.acc.SetPassword(ctx, user, password)
}

func (b *internalBackend) Delete(ctx context.Context, user string) error {
	return b.acc.Delete(ctx, user)
}
