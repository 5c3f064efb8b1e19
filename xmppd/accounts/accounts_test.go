package accounts

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"xedge/storage"
	"xedge/xmppd/internal/memstore"
	"xedge/xmppd/internal/scram"
)

func TestAccounts(t *testing.T) {
	ctx := context.Background()
	st := memstore.New("n1")
	var removed []string
	a := New(st, "localhost", func(_ context.Context, u string) { removed = append(removed, u) })
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Create(ctx, "Alice", "secret"); err != nil {
		t.Fatal(err)
	}
	if err := a.Create(ctx, "alice", "x"); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("dup: %v", err)
	}
	if err := a.Create(ctx, "bad@user", "x"); !errors.Is(err, ErrInvalidUser) {
		t.Fatalf("invalid: %v", err)
	}
	tb, _ := st.Durable(Table)
	v, _, _ := tb.Get("alice")
	if strings.Contains(string(v), "secret") {
		t.Fatal("password stored")
	}
	if u, ok, _ := a.CheckPassword("ALICE", "secret"); !ok || u != "alice" {
		t.Fatal("check")
	}
	if _, ok, _ := a.CheckPassword("alice", "nope"); ok {
		t.Fatal("wrong password accepted")
	}
	if err := a.SetPassword(ctx, "alice", "new"); err != nil {
		t.Fatal(err)
	}
	k, ok, _ := a.Lookup(scram.SHA1)("alice")
	if !ok || !k.Verify(scram.SHA1, "new") {
		t.Fatal("sha1 keys after passwd")
	}
	if err := a.SetPassword(ctx, "bob", "x"); !errors.Is(err, ErrNoUser) {
		t.Fatalf("passwd unknown: %v", err)
	}
	l, _ := a.List(ctx)
	if len(l) != 1 || l[0] != "alice" {
		t.Fatal(l)
	}
	if err := a.Delete(ctx, "alice"); err != nil || len(removed) != 1 {
		t.Fatal(err, removed)
	}
	if err := a.Delete(ctx, "alice"); !errors.Is(err, ErrNoUser) {
		t.Fatal(err)
	}
	st.SetFail(storage.ErrUnavailable)
	if err := a.Create(ctx, "carol", "x"); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("unavailable: %v", err)
	}
}

// A user imported with SCRAM-SHA-1 keys only (ejabberd's and Prosody's exports):
// SCRAM-SHA-256 looks like an unknown user (the client falls back to SHA-1, which
// works), PLAIN checks the SHA-1 keys.
func TestSHA1OnlyRecord(t *testing.T) {
	ctx := context.Background()
	st := memstore.New("n1")
	a := New(st, "localhost", nil)
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	k, _ := scram.Derive(scram.SHA1, "old", 4096)
	b, _ := json.Marshal(Record{SHA1: k})
	if err := st.Apply(ctx, storage.Put(Table, "imported", b)); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := a.Lookup(scram.SHA256)("imported"); ok || err != nil {
		t.Fatalf("SCRAM-SHA-256 keys of a SHA-1-only user: ok=%v err=%v", ok, err)
	}
	if got, ok, _ := a.Lookup(scram.SHA1)("imported"); !ok || !got.Verify(scram.SHA1, "old") {
		t.Fatal("SCRAM-SHA-1 keys lost")
	}
	if _, ok, _ := a.CheckPassword("imported", "old"); !ok {
		t.Fatal("PLAIN refused the right password")
	}
	if _, ok, _ := a.CheckPassword("imported", "wrong"); ok {
		t.Fatal("PLAIN accepted a wrong password")
	}
}

// Two hosts share the users table without sharing accounts: alice of the
// default host keeps her old key, alice of b.example is another account.
func TestForHost(t *testing.T) {
	ctx := context.Background()
	st := memstore.New("n1")
	var removed []string
	a := New(st, "a.example", func(_ context.Context, u string) { removed = append(removed, u) })
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	b := a.ForHost("b.example")
	if a.ForHost("a.example") != a || b.Domain() != "b.example" {
		t.Fatal("views")
	}
	if err := a.Create(ctx, "alice", "pa"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := b.Exists(ctx, "alice"); ok {
		t.Fatal("b.example's alice exists before she registered")
	}
	if err := b.Create(ctx, "Alice", "pb"); err != nil {
		t.Fatal(err)
	}
	if err := b.Create(ctx, "bob", "pb"); err != nil {
		t.Fatal(err)
	}
	tb, _ := st.Durable(Table)
	if _, ok, _ := tb.Get("alice@b.example"); !ok {
		t.Fatal("b.example's key")
	}
	if _, ok, _ := a.CheckPassword("alice", "pb"); ok {
		t.Fatal("a.example's alice accepts b.example's password")
	}
	if _, ok, _ := b.CheckPassword("alice", "pb"); !ok {
		t.Fatal("b.example's alice refuses her password")
	}
	if k, ok, err := b.Lookup("SCRAM-SHA-256")("alice"); err != nil || !ok || len(k.StoredKey) == 0 {
		t.Fatalf("lookup %v %v", ok, err)
	}
	la, _ := a.List(ctx)
	lb, _ := b.List(ctx)
	if strings.Join(la, ",") != "alice" || strings.Join(lb, ",") != "alice,bob" {
		t.Fatalf("lists %v %v", la, lb)
	}
	if err := b.Delete(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := a.Exists(ctx, "alice"); !ok {
		t.Fatal("deleting b.example's alice removed a.example's")
	}
	if strings.Join(removed, ",") != "alice@b.example" {
		t.Fatalf("removed %v", removed)
	}
}
