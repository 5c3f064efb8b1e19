//go:build integration

package compat_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"xedge/bench/loadgen"
	"xedge/bench/servers"
	"xedge/xmppd/internal/testenv"
)

const pw = "compat-pw"

var users = []string{"cmpalice", "cmpbob", "cmpcarol"}

// supported lists the scenarios each peer supports with the suite's
// configuration: a supported scenario that fails on a peer fails the test (the
// comparison would be empty otherwise). ejabberd 23.01 refuses the publish-options
// Bookmarks 2 clients send (pubsub#max_items=max: resource-constraint).
var supported = map[string][]string{
	servers.Ejabberd: {"pep", "mam", "muc", "upload"},
	servers.Prosody:  {"pep", "mam", "muc", "bookmarks", "upload"},
}

// observed is one server's answer: scenario -> observation -> value.
type observed map[string]map[string]any

// peer starts ejabberd or Prosody with the suite's configuration (testdata/),
// registers the users in-band and returns its c2s address.
func peer(t *testing.T, kind string) (addr string, stop func()) {
	t.Helper()
	tmpl, err := os.ReadFile(filepath.Join("testdata", map[string]string{servers.Ejabberd: "ejabberd.yml", servers.Prosody: "prosody.cfg.lua"}[kind]))
	if err != nil {
		t.Fatal(err)
	}
	httpPort := strings.TrimPrefix(testenv.FreeAddr(t, "127.0.0.1"), "127.0.0.1:")
	cpu := 0
	if kind == servers.Ejabberd {
		cpu = 1 // the two peers start at the same time
	}
	s, err := servers.New(servers.Config{Kind: kind, CPU: cpu, Template: string(tmpl), Vars: map[string]string{"HTTPPORT": httpPort}})
	if err != nil {
		t.Fatal(err)
	}
	stop = func() {
		if err := s.Remove(false); err != nil {
			t.Errorf("stopping %s: %v", kind, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		stop()
		t.Fatalf("%s: %v", kind, err)
	}
	for _, u := range users {
		var last error
		for attempt := 0; attempt < 3; attempt++ {
			c, err := loadgen.Dial(ctx, loadgen.Options{Addr: s.Addr, Domain: s.Domain(), TLSIfOffered: true, Timeout: 20 * time.Second})
			if err != nil {
				last = err
				continue
			}
			last = c.Register(u, pw)
			c.Abort()
			if last == nil || errors.Is(last, loadgen.ErrConflict) {
				last = nil
				break
			}
		}
		if last != nil {
			stop()
			t.Fatalf("%s: register %s: %v", kind, u, last)
		}
	}
	return s.Addr, stop
}

// scenarios runs testdata/compat.py against addr and returns what it observed.
func scenarios(addr, domain string) (observed, string, error) {
	host, port, _ := strings.Cut(addr, ":")
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Python, append([]string{"-u", filepath.Join("testdata", "compat.py"), host, port, domain, pw}, users...)...)
	out, err := cmd.CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		if j, ok := strings.CutPrefix(l, "RESULT "); ok {
			var o observed
			if jerr := json.Unmarshal([]byte(j), &o); jerr != nil {
				return nil, string(out), jerr
			}
			return o, string(out), nil
		}
	}
	return nil, string(out), fmt.Errorf("no result line (%v)", err)
}

// TestCompatWithEjabberdAndProsody runs the scenarios against ejabberd, Prosody
// and xmppd (each started here, all three at once) and checks, per scenario a
// peer supports, that xmppd observed what the peers observed; where ejabberd and
// Prosody disagree xmppd must match one of them (the difference is logged). A
// scenario a peer supports (supported) must pass on it.
func TestCompatWithEjabberdAndProsody(t *testing.T) {
	testenv.NeedSlixmpp(t)
	for _, bin := range []string{"/usr/sbin/ejabberdctl", "/usr/bin/prosody", "/usr/bin/taskset"} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s missing (build/setup.sh installs it): %v", bin, err)
		}
	}
	httpAddr := testenv.FreeAddr(t, "127.0.0.1")
	x := testenv.Start(t, testenv.Options{NoTLSListener: true, Args: []string{"--http", httpAddr, "--http-tls=false",
		"--upload-dir", t.TempDir(), "--upload-max-size", "100000", "--upload-url", "http://" + httpAddr}})
	for _, u := range users {
		x.Register(t, u, pw)
	}
	results := map[string]observed{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	run := func(name, addr string) {
		defer wg.Done()
		t0 := time.Now()
		o, out, err := scenarios(addr, "localhost")
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			t.Errorf("%s: scenarios: %v\n%s", name, err, out)
			return
		}
		results[name] = o
		t.Logf("%s: scenarios ran in %v", name, time.Since(t0).Round(time.Millisecond))
	}
	wg.Add(1)
	go run("xmppd", x.Addr())
	for _, kind := range []string{servers.Ejabberd, servers.Prosody} {
		wg.Add(1)
		go func(kind string) {
			t0 := time.Now()
			addr, stop := peer(t, kind)
			t.Cleanup(stop)
			t.Logf("%s: started and provisioned in %v", kind, time.Since(t0).Round(time.Millisecond))
			run(kind, addr)
		}(kind)
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	compare(t, results)
}

// compare applies the suite's rule to the three servers' observations.
func compare(t *testing.T, results map[string]observed) {
	x := results["xmppd"]
	names := make([]string, 0, len(x))
	for n := range x {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, sc := range names {
		xo := x[sc]
		if e, ok := xo["error"]; ok {
			t.Errorf("%s: xmppd failed the scenario: %v\n%v", sc, e, xo["trace"])
			continue
		}
		var support []string
		for _, p := range []string{servers.Ejabberd, servers.Prosody} {
			e, failed := results[p][sc]["error"]
			switch {
			case !slices.Contains(supported[p], sc):
				t.Logf("%s: %s does not support the scenario (%v): not compared", sc, p, e)
				continue
			case failed:
				t.Errorf("%s: %s, which supports the scenario, failed it: %v", sc, p, e)
				continue
			}
			support = append(support, p)
		}
		for key, xv := range xo {
			if strings.HasPrefix(key, "_") {
				continue
			}
			var agree, differ []string
			for _, p := range support {
				pv, ok := results[p][sc][key]
				if !ok {
					continue
				}
				if reflect.DeepEqual(pv, xv) {
					agree = append(agree, p)
				} else {
					differ = append(differ, p+"="+show(pv))
				}
			}
			switch {
			case len(differ) == 0:
			case len(agree) > 0:
				t.Logf("%s.%s: xmppd=%s as %s; %s", sc, key, show(xv), strings.Join(agree, ","), strings.Join(differ, " "))
			default:
				t.Errorf("%s.%s: xmppd=%s, but %s", sc, key, show(xv), strings.Join(differ, " "))
			}
		}
		t.Logf("%s: compared with %v (%s s on xmppd): %s", sc, support, show(xo["_seconds"]), show(xo))
	}
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return strconv.Quote(fmt.Sprint(v))
	}
	return string(b)
}
