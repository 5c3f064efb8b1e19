package main

import "testing"

func TestProcsFor(t *testing.T) {
	for _, c := range []struct {
		cur    int
		envSet bool
		want   int
	}{
		{1, false, 2}, // one CPU: raised
		{2, false, 2},
		{8, false, 8},
		{1, true, 1}, // the operator's GOMAXPROCS=1 stands
	} {
		if got := procsFor(c.cur, c.envSet); got != c.want {
			t.Errorf("procsFor(%d, %v) = %d, want %d", c.cur, c.envSet, got, c.want)
		}
	}
}
