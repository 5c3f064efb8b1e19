package workload

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"xedge/bench/loadgen"
)

// FanoutResult is the presence fan-out measurement.
type FanoutResult struct {
	Users      int     `json:"users"`
	Contacts   int     `json:"contacts"`
	Expected   int64   `json:"expected_deliveries"`
	Delivered  int64   `json:"delivered"`
	Seconds    float64 `json:"seconds"`
	PerSecond  float64 `json:"deliveries_per_second"`
	ServerCPU  float64 `json:"server_cpu"`
	ClientCPU  float64 `json:"client_cpu"`
	SetupLogin float64 `json:"login_seconds"`
	P50Seconds float64 `json:"p50_delivery_seconds"`
	P90Seconds float64 `json:"p90_delivery_seconds"`
}

// ringContacts returns the contacts of user i in a ring of n users where everyone
// has k contacts: i±1 .. i±k/2.
func ringContacts(i, n, k int) []int {
	out := make([]int, 0, k)
	for d := 1; d <= k/2; d++ {
		out = append(out, (i+d)%n, (i-d+n)%n)
	}
	return out
}

// Rosters maps a user's local part to the bare JIDs in its roster; every item
// has subscription "both", no name and no groups.
type Rosters map[string][]string

// RingRosters returns the fan-out rosters: user i of n has k contacts, i±1..i±k/2.
func RingRosters(prefix, domain string, n, k int) Rosters {
	r := make(Rosters, n)
	for i := range n {
		u, _ := User(prefix, i)
		items := make([]string, 0, k)
		for _, c := range ringContacts(i, n, k) {
			cu, _ := User(prefix, c)
			items = append(items, cu+"@"+domain)
		}
		r[u] = items
	}
	return r
}

// ProvisionRosters gives each of n users (prefix0..) k contacts with mutual
// ("both") subscriptions. If the target can store rosters directly
// (Target.WriteRosters: Prosody's files) they are written there; otherwise they
// are made over XMPP: all users log in, each sends subscribe to its contacts and
// approves every subscribe it receives. Either way every user then logs in and
// fetches its roster, and provisioning fails unless each has its k contacts in
// state both.
func ProvisionRosters(ctx context.Context, t *Target, prefix string, n, k int, timeout time.Duration) error {
	if k >= n || k%2 != 0 {
		return fmt.Errorf("contacts %d must be even and below users %d", k, n)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	if t.WriteRosters != nil {
		if err := t.WriteRosters(ctx, RingRosters(prefix, t.Domain, n, k)); err != nil {
			return fmt.Errorf("write rosters: %w", err)
		}
		t.Log.Info("rosters written to storage", "server", t.Name, "users", n, "contacts", k, "took", time.Since(start).Round(time.Millisecond))
	}
	conns, err := loginAll(ctx, t, prefix, n, 0, true)
	if err != nil {
		return err
	}
	if t.WriteRosters != nil {
		sess := make([]*session, n)
		for i := range n {
			sess[i] = newSession(conns[i], nil, nil)
		}
		defer func() {
			for _, s := range sess {
				s.close()
			}
		}()
		still, err := incompleteRosters(ctx, t, sess, allUsers(n), prefix, n, k)
		if err != nil {
			return err
		}
		if len(still) > 0 {
			return fmt.Errorf("rosters written but %d of %d users' roster fetch lacks contacts in state both (first: %s%d)", len(still), n, prefix, still[0])
		}
		t.Log.Info("rosters provisioned", "server", t.Name, "users", n, "contacts", k, "how", "storage", "took", time.Since(start).Round(time.Millisecond))
		return nil
	}
	sess := make([]*session, n)
	var smu sync.Mutex
	defer func() {
		for _, s := range sess {
			if s != nil {
				s.close()
			}
		}
	}()
	// Each reader tracks, per user, the contacts that approved its subscription
	// and the contacts it approved: when every user has k of each, the
	// handshakes are done and one roster round confirms it (polling rosters while
	// the server works through 4*n*k/2 subscription stanzas would only add load).
	approvedBy := make([]map[string]bool, n)
	approvedTo := make([]map[string]bool, n)
	asked := make([]map[string]bool, n)
	jid := func(i int) string { u, _ := User(prefix, i); return u + "@" + t.Domain }
	var done atomic.Int64
	for i := range n {
		approvedBy[i], approvedTo[i], asked[i] = map[string]bool{}, map[string]bool{}, map[string]bool{}
		// The pair (i, i+d) is started by i: one subscribe each way, never
		// both at once (simultaneous mutual requests leave Prosody 0.12's
		// rosters incomplete).
		for d := 1; d <= k/2; d++ {
			asked[i][jid((i+d)%n)] = true
		}
		var s *session
		var counted bool
		s = newSession(conns[i], nil, func(el []byte) {
			from := string(bareOf(attr(el, "from")))
			switch string(attr(el, "type")) {
			case "subscribe":
				smu.Lock()
				ss := s
				smu.Unlock()
				if ss.send([]byte("<presence type='subscribed' to='"+from+"'/>")) == nil {
					approvedTo[i][from] = true
				}
				// Ask back (the lower-numbered side of each pair asked first).
				if !asked[i][from] {
					asked[i][from] = true
					_ = ss.send([]byte("<presence type='subscribe' to='" + from + "'/>"))
				}
			case "subscribed":
				approvedBy[i][from] = true
			default:
				return
			}
			if !counted && len(approvedTo[i]) >= k && len(approvedBy[i]) >= k {
				counted = true
				done.Add(1)
			}
		})
		// Prosody 0.12 does not deliver the inbound <presence type='subscribed'/>
		// (RFC 6121 §3.1.6); the roster push with subscription to/both says the same.
		onPush := func(el []byte) {
			it := loadgen.Child(el, "item")
			if it == nil {
				return
			}
			switch string(attr(it, "subscription")) {
			case "to", "both":
				approvedBy[i][loadgen.Unescape(attr(it, "jid"))] = true
			default:
				return
			}
			if !counted && len(approvedTo[i]) >= k && len(approvedBy[i]) >= k {
				counted = true
				done.Add(1)
			}
		}
		s.mu.Lock()
		s.onPush = onPush
		s.mu.Unlock()
		smu.Lock()
		sess[i] = s
		smu.Unlock()
	}
	err = Parallel(ctx, n, 20, func(ctx context.Context, i int) error {
		// Fetching the roster makes the session an "interested resource" that
		// gets roster pushes (RFC 6121 §2.1.6).
		if _, err := sess[i].roster(60 * time.Second); err != nil {
			return fmt.Errorf("roster: %w", err)
		}
		for d := 1; d <= k/2; d++ {
			c := (i + d) % n
			if err := sess[i].send([]byte("<presence type='subscribe' to='" + jid(c) + "'/>")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	for done.Load() < int64(n) {
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("subscription handshakes complete for %d of %d users after %v: %w", done.Load(), n, time.Since(start).Round(time.Second), ctx.Err())
		}
	}
	// Poll until every roster is complete.
	pending := allUsers(n)
	for round := 0; len(pending) > 0; round++ {
		select {
		case <-time.After(time.Duration(min(round, 1)) * 3 * time.Second):
		case <-ctx.Done():
			return fmt.Errorf("rosters incomplete for %d users after %v: %w", len(pending), time.Since(start).Round(time.Second), ctx.Err())
		}
		if pending, err = incompleteRosters(ctx, t, sess, pending, prefix, n, k); err != nil {
			return err
		}
	}
	t.Log.Info("rosters provisioned", "server", t.Name, "users", n, "contacts", k, "how", "xmpp", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func allUsers(n int) []int {
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	return all
}

// incompleteRosters fetches the rosters of the pending users (indexes into sess)
// and returns those lacking any of their k ring contacts in state both.
func incompleteRosters(ctx context.Context, t *Target, sess []*session, pending []int, prefix string, n, k int) ([]int, error) {
	var still []int
	var mu sync.Mutex
	err := Parallel(ctx, len(pending), 20, func(ctx context.Context, j int) error {
		i := pending[j]
		items, err := sess[i].roster(30 * time.Second)
		if err != nil {
			// A busy server may answer late (ejabberd with 20,000
			// subscriptions in flight): poll again next round, bounded by
			// the phase deadline.
			t.Log.Debug("roster poll", "user", i, "err", err)
			items = nil
		}
		both := 0
		for _, c := range ringContacts(i, n, k) {
			u, _ := User(prefix, c)
			if items[u+"@"+t.Domain] == "both" {
				both++
			}
		}
		if both < k {
			mu.Lock()
			still = append(still, i)
			mu.Unlock()
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("roster poll: %w", err)
	}
	return still, nil
}

// Fanout logs the n provisioned users in (STARTTLS, initial presence), waits until
// every user has seen every contact available, then has all users change presence
// at once (<show>away</show> with a per-run status). It measures the time from
// the release until every contact has received every change: n*k deliveries.
func Fanout(ctx context.Context, t *Target, prefix string, n, k int, timeout time.Duration) (FanoutResult, error) {
	r := FanoutResult{Users: n, Contacts: k, Expected: int64(n) * int64(k)}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	conns, err := loginAll(ctx, t, prefix, n, 0, true)
	if err != nil {
		return r, err
	}
	r.SetupLogin = time.Since(start).Seconds()
	token := []byte("fanout-" + strconv.FormatInt(time.Now().UnixNano(), 36))
	var avail, changed atomic.Int64
	var lastNano atomic.Int64
	times := make([][]int64, n) // per user: delivery times of the change (reader goroutine only)
	base := time.Now()
	seen := make([]map[string]bool, n) // per user: contacts seen available (reader goroutine only)
	// Per user: its ring contacts -> seen with the token yet. Pre-populated with
	// pointers so the measured path only looks up (no allocation while measuring).
	got := make([]map[string]*bool, n)
	sess := make([]*session, n)
	for i := range n {
		seen[i], got[i] = map[string]bool{}, make(map[string]*bool, k)
		for _, c := range ringContacts(i, n, k) {
			u, _ := User(prefix, c)
			got[i][u+"@"+t.Domain] = new(bool)
		}
		times[i] = make([]int64, 0, k)
		self := string(bareOf([]byte(conns[i].JID)))
		sess[i] = newSession(conns[i], nil, func(el []byte) {
			from := bareOf(attr(el, "from"))
			if string(from) == self || len(attr(el, "type")) != 0 {
				return
			}
			if bytes.Contains(el, token) {
				if p := got[i][string(from)]; p != nil && !*p {
					*p = true
					now := int64(time.Since(base))
					times[i] = append(times[i], now)
					changed.Add(1)
					lastNano.Store(now)
				}
				return
			}
			if !seen[i][string(from)] {
				seen[i][string(from)] = true
				avail.Add(1)
			}
		})
	}
	defer func() {
		for _, s := range sess {
			s.close()
		}
	}()
	for avail.Load() < r.Expected {
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return r, fmt.Errorf("initial presence: %d of %d contacts seen available: %w", avail.Load(), r.Expected, ctx.Err())
		}
	}
	time.Sleep(500 * time.Millisecond) // let the login storm's tail settle
	stanza := []byte("<presence><show>away</show><status>" + string(token) + "</status></presence>")
	defer loadgen.HoldGC(loadgen.InstrumentHeap)() // the instrument's GC out of the measurement
	cpu := startCPU(t)
	release := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-release
			_ = sess[i].send(stanza)
		}()
	}
	t0 := int64(time.Since(base))
	close(release)
	wg.Wait()
	for changed.Load() < r.Expected {
		select {
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			r.Delivered = changed.Load()
			return r, fmt.Errorf("fan-out: %d of %d delivered: %w", r.Delivered, r.Expected, ctx.Err())
		}
	}
	r.ServerCPU = cpu.share()
	r.ClientCPU = cpu.client()
	r.Delivered = changed.Load()
	r.Seconds = float64(lastNano.Load()-t0) / 1e9
	r.PerSecond = float64(r.Delivered) / r.Seconds
	var all []int64
	for _, ts := range times {
		all = append(all, ts...)
	}
	if len(all) > 0 {
		slices.Sort(all)
		r.P50Seconds = float64(all[len(all)/2]-t0) / 1e9
		r.P90Seconds = float64(all[len(all)*9/10]-t0) / 1e9
	}
	t.Log.Info("presence fan-out", "server", t.Name, "users", n, "contacts", k, "seconds", fmt.Sprintf("%.3f", r.Seconds),
		"per_second", fmt.Sprintf("%.0f", r.PerSecond), "p50_s", fmt.Sprintf("%.3f", r.P50Seconds), "p90_s", fmt.Sprintf("%.3f", r.P90Seconds), "server_cpu", fmt.Sprintf("%.2f", r.ServerCPU), "client_cpu", fmt.Sprintf("%.2f", r.ClientCPU))
	return r, nil
}
