package server

import (
	"testing"

	"xedge/storage"
)

func TestHoldersFromVIPRows(t *testing.T) {
	rows := []storage.Row{
		{Key: "n1", Node: "n1", Value: []byte(`{"healthy":true,"holds":["10.0.0.100/24","fd00::100/64"]}`)},
		{Key: "n2", Node: "n2", Value: []byte(`{"healthy":true,"holds":["10.0.0.101/24"]}`)},
		{Key: "n3", Node: "n3", Value: []byte(`{"holds":["10.0.0.102/24"],"leaving":true}`)}, // leaving: ignored
		{Key: "n0", Node: "n0", Value: []byte(`{"holds":["10.0.0.101/24"]}`)},                // handover overlap: lower name kept
		{Key: "x", Node: "n4", Value: []byte(`{"holds":["10.0.0.103/24"]}`)},                 // not a node's own row
		{Key: "n5", Node: "n5", Value: []byte(`garbage`)},
	}
	got := holdersFromRows(rows)
	want := map[string]string{"10.0.0.100": "n1", "fd00::100": "n1", "10.0.0.101": "n0"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
}
