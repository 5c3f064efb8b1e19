package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseTsungLog(t *testing.T) {
	log := `# stats: dump at 1700000000
stats: users 3 3
stats: connect 10 2.0 0.1 3.0 1.0 2.0 10
stats: request 100 4.0 1.0 9.0 1.0 4.0 100
stats: tr_authenticate 10 6.0 1.0 9.0 1.0 6.0 10
stats: error_connect_econnrefused 2 2
# stats: dump at 1700000010
stats: request 300 8.0 1.0 9.0 1.0 8.0 300
stats: finish_users_count 5 9
stats: error_connect_econnrefused 1 3
`
	p := filepath.Join(t.TempDir(), "tsung.log")
	if err := os.WriteFile(p, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	var r tsungResult
	if err := parseTsungLog(p, &r); err != nil {
		t.Fatal(err)
	}
	if r.Requests != 400 || r.MeanRequestMs != 7 {
		t.Errorf("requests %d mean %v, want 400 and 7 (count-weighted)", r.Requests, r.MeanRequestMs)
	}
	if r.MeanConnectMs != 2 || r.MeanAuthMs != 6 || r.Finished != 9 {
		t.Errorf("connect %v auth %v finished %d", r.MeanConnectMs, r.MeanAuthMs, r.Finished)
	}
	if len(r.Transactions) != 1 || r.Transactions["authenticate"] != 6 {
		t.Errorf("transactions %v, want authenticate 6", r.Transactions)
	}
	if r.Errors["error_connect_econnrefused"] != 3 {
		t.Errorf("errors %v", r.Errors)
	}
}
