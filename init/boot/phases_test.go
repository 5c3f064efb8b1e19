package boot

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestPhaseList(t *testing.T) {
	var ran []string
	step := func(name string, err error) func(context.Context) error {
		return func(context.Context) error { ran = append(ran, name); return err }
	}
	l := PhaseList{}.Append("a", step("a", nil)).AppendOptional("b", step("b", errors.New("soft"))).
		Append("c", step("c", errors.New("hard"))).Append("d", step("d", nil))
	var results []Result
	err := l.Run(context.Background(), func(r Result) { results = append(results, r) })
	if err == nil || !strings.Contains(err.Error(), "boot phase c: hard") {
		t.Fatalf("err %v", err)
	}
	if strings.Join(ran, "") != "abc" || len(results) != 3 || results[1].Err == nil || !results[1].Optional {
		t.Fatalf("ran %v results %+v", ran, results)
	}
}
