//go:build integration

package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"xedge/iscsi/tgt"
	"xedge/xmppd/internal/testenv"
)

// scrape fetches url and parses it with Prometheus' own text parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := cl.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("scrape %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return mfs
}

// lint checks the exposition at url with Prometheus' own linter (promlint:
// naming conventions, units, _total on counters, help text).
func lint(t *testing.T, url string) {
	t.Helper()
	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := cl.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	probs, err := promlint.New(resp.Body).Lint()
	if err != nil {
		t.Fatalf("lint %s: %v", url, err)
	}
	for _, p := range probs {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
}

// value returns the value of the metric of family name whose labels include
// the given name=value pairs; ok false if there is none.
func value(mfs map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

const opsScript = `
import asyncio, os, sys
import xmpptest

ready, release = sys.argv[1], sys.argv[2]

async def main():
    a = xmpptest.client(xmpptest.jid("alice", "phone"), "pw-alice")
    b = xmpptest.client(xmpptest.jid("bob", "pc"), "pw-bob")
    await xmpptest.start(a)
    await xmpptest.start(b)
    got, done = [], xmpptest.future()
    def on(msg):
        if msg["type"] in ("chat", "normal"):
            got.append(msg["body"])
            if len(got) == 40 and not done.done():
                done.set_result(True)
    b.add_event_handler("message", on)
    for i in range(40):
        a.send_message(mto=xmpptest.jid("bob"), mbody="m%d" % i, mtype="chat")
    await asyncio.wait_for(done, 20)
    bad = xmpptest.client(xmpptest.jid("alice", "bad"), "wrong-password")
    try:
        await xmpptest.start(bad, timeout=10)
    except RuntimeError as e:
        if "authentication failed" not in str(e):
            raise
    else:
        raise RuntimeError("a wrong password was accepted")
    bad.disconnect()
    kicked = xmpptest.event(b, "disconnected")
    open(ready, "w").write("ready")
    await asyncio.wait_for(kicked, 30)
    print("BOB KICKED")
    for _ in range(600):
        if os.path.exists(release):
            break
        await asyncio.sleep(0.1)
    await xmpptest.stop(a)

xmpptest.run(main, 120)
`

// TestOperations runs one xmppd with --http (TLS), --metrics and an admin,
// drives it with slixmpp (logins, messages, a failed login), and checks, with
// the real components: the Prometheus endpoint parsed by Prometheus' parser
// (names present, values moved), ejabberdctl's command forms through xmppctl,
// and the web admin page rendered by headless Chromium (DOM and screenshot).
func TestOperations(t *testing.T) {
	testenv.NeedSlixmpp(t)
	httpAddr, metricsAddr := freeAddr(t), freeAddr(t)
	s := testenv.Start(t, testenv.Options{Args: []string{"--http", httpAddr, "--metrics", metricsAddr, "--admins", "boss"}})
	metricsURL := "http://" + metricsAddr + "/metrics"

	// ejabberdctl's forms.
	ctl := func(wantCode int, args ...string) string {
		t.Helper()
		o, e, code := s.Ctl(args...)
		if code != wantCode {
			t.Fatalf("xmppctl %v: exit %d, want %d\n%s%s", args, code, wantCode, o, e)
		}
		return o + e
	}
	ctl(0, "register", "alice", "localhost", "pw-alice")
	ctl(0, "register", "bob", "localhost", "pw-bob")
	ctl(0, "register", "boss", "boss-secret")
	ctl(0, "register", "carol", "localhost", "pw-carol")
	if out := ctl(1, "register", "mallory", "elsewhere.example", "pw"); !strings.Contains(out, `host "elsewhere.example" is not served here`) {
		t.Fatalf("foreign host: %s", out)
	}
	if out := ctl(0, "registered_users", "localhost"); out != "alice\nbob\nboss\ncarol\n" {
		t.Fatalf("registered_users: %q", out)
	}
	ctl(0, "check_account", "carol", "localhost")
	ctl(0, "change_password", "carol", "localhost", "pw-carol2")
	ctl(1, "check_password", "carol", "localhost", "pw-carol")
	ctl(0, "check_password", "carol", "localhost", "pw-carol2")
	ctl(0, "unregister", "carol", "localhost")
	ctl(1, "check_account", "carol", "localhost")
	if out := ctl(0, "stats", "registeredusers"); strings.TrimSpace(out) != "3" {
		t.Fatalf("stats registeredusers: %q", out)
	}
	if out := ctl(0, "mnesia", "info"); !strings.Contains(out, "mode:") || !strings.Contains(out, "durable") || !strings.Contains(out, "NAME") {
		t.Fatalf("mnesia info: %s", out)
	}

	before := scrape(t, metricsURL)
	lint(t, metricsURL)
	for _, name := range []string{"xmppd_sessions", "xmppd_logins_total", "xmppd_login_failures_total", "xmppd_stanzas_in_total",
		"xmppd_stanzas_out_total", "xmppd_routing_latency_seconds", "xmppd_storage_mode", "xmppd_storage_role", "xmppd_storage_leader",
		"xmppd_storage_applied_index", "xmppd_storage_lag_entries", "xmppd_build_info", "xmppd_uptime_seconds", "xmppd_log_records_total",
		"xmppd_c2s_connections", "xmppd_c2s_parked_streams", "xmppd_c2s_send_queue_stanzas", "xmppd_c2s_sm_unacked_stanzas", "xmppd_c2s_detached_sessions",
		"go_goroutines", "go_memstats_heap_alloc_bytes", "go_gc_duration_seconds", "process_resident_memory_bytes"} {
		if before[name] == nil {
			t.Errorf("metric %s missing", name)
		}
	}
	if v, _ := value(before, "xmppd_storage_mode", "mode", "durable"); v != 1 {
		t.Errorf("storage_mode{mode=durable} = %v", v)
	}
	if v, _ := value(before, "xmppd_storage_commit_seconds"); v < 5 { // 4 registrations, a password change, a removal
		t.Errorf("storage commits timed: %v", v)
	}
	if v, _ := value(before, "xmppd_sessions"); v != 0 {
		t.Errorf("sessions before any login = %v", v)
	}

	dir := t.TempDir()
	ready, release := filepath.Join(dir, "ready"), filepath.Join(dir, "release")
	res := make(chan testenv.PythonResult, 1)
	go func() { res <- s.Python(150*time.Second, opsScript, ready, release) }()
	defer os.WriteFile(release, []byte("x"), 0o644)
	deadline := time.Now().Add(90 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case r := <-res:
			t.Fatalf("script ended early: %v\n%s\n--- xmppd ---\n%s", r.Err, r.Output, s.Logs())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("script never got ready")
		}
	}

	after := scrape(t, metricsURL)
	moved := func(name string, min float64, labels ...string) {
		t.Helper()
		b, _ := value(before, name, labels...)
		a, ok := value(after, name, labels...)
		if !ok || a-b < min {
			t.Errorf("%s%v: %v -> %v, want +%v", name, labels, b, a, min)
		}
	}
	moved("xmppd_sessions", 2)
	moved("xmppd_c2s_connections", 2)
	moved("xmppd_logins_total", 2)
	moved("xmppd_login_failures_total", 1)
	moved("xmppd_stanzas_in_total", 40, "type", "message")
	moved("xmppd_stanzas_out_total", 40, "type", "message")
	moved("xmppd_routing_latency_seconds", 2) // 1 message in 16 timed: 40 messages, at least 2 samples
	moved("xmppd_stanzas_in_total", 2, "type", "presence")
	moved("xmppd_log_records_total", 1, "level", "info")
	// The same metrics on the HTTPS listener.
	if tlsm := scrape(t, "https://"+httpAddr+"/metrics"); tlsm["xmppd_sessions"] == nil {
		t.Error("no xmppd_sessions on the https listener")
	}

	out := ctl(0, "connected_users")
	if out != "alice@localhost/phone\nbob@localhost/pc\n" {
		t.Fatalf("connected_users: %q", out)
	}
	if out := ctl(0, "connected_users_number"); strings.TrimSpace(out) != "2" {
		t.Fatalf("connected_users_number: %q", out)
	}

	// Web admin: refused without the right account (a warning the page then
	// lists), rendered for an admin in headless Chromium.
	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for _, cred := range [][2]string{{"", ""}, {"alice", "pw-alice"}, {"boss", "wrong"}} {
		req, _ := http.NewRequest("GET", "https://"+httpAddr+"/admin/", nil)
		if cred[0] != "" {
			req.SetBasicAuth(cred[0], cred[1])
		}
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("web admin as %q: %s, want 401", cred[0], resp.Status)
		}
	}
	dom, shot := chromium(t, "https://boss:boss-secret@"+httpAddr+"/admin/")
	for _, want := range []string{"xmppd node", "Sessions", "alice@localhost/phone", "bob@localhost/pc", "Storage", "durable",
		"Tables", "Recent warnings", "web admin: login refused", "signed in as boss"} {
		if !strings.Contains(dom, want) {
			t.Errorf("web admin page lacks %q", want)
		}
	}
	if strings.Contains(dom, "<script") {
		t.Error("web admin page carries JavaScript")
	}
	t.Logf("web admin screenshot: %s (%d bytes)", shot, fileSize(shot))

	ctl(0, "kick_session", "bob", "localhost", "pc", "maintenance window")
	os.WriteFile(release, []byte("x"), 0o644)
	r := <-res
	if r.Err != nil || !strings.Contains(r.Output, "BOB KICKED") || !strings.Contains(r.Output, "PASS") {
		t.Fatalf("script: %v\n%s\n--- xmppd ---\n%s", r.Err, r.Output, s.Logs())
	}
	if out := ctl(0, "connected_users"); strings.Contains(out, "bob@") {
		t.Fatalf("bob still connected after kick_session: %q", out)
	}
}

func fileSize(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return -1
	}
	return st.Size()
}

// chromium loads url in headless Chromium (Debian's package chromium) and
// returns the DOM and the path of a screenshot kept in the test's artifact
// directory (go test -artifacts keeps it).
func chromium(t *testing.T, url string) (dom, screenshot string) {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not installed (build/setup.sh test installs Debian's chromium): %v", err)
	}
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--no-first-run", "--ignore-certificate-errors", "--window-size=1280,1600"}
	run := func(args ...string) []byte {
		t.Helper()
		profile := t.TempDir()
		cmd := exec.Command(bin, append(append(base, "--user-data-dir="+profile), args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		cmd.Env = append(os.Environ(), "HOME="+profile)
		done := make(chan struct{})
		var out []byte
		go func() { out, err = cmd.Output(); close(done) }()
		select {
		case <-done:
		case <-time.After(90 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatalf("chromium timed out\n%s", stderr.String())
		}
		if err != nil {
			t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
		}
		return out
	}
	dom = string(run("--dump-dom", url))
	screenshot = filepath.Join(t.ArtifactDir(), "webadmin.png")
	run("--screenshot="+screenshot, url)
	b, err := os.ReadFile(screenshot)
	if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Fatalf("no PNG screenshot at %s: %v", screenshot, err)
	}
	return dom, screenshot
}

// metricsURL returns the /metrics URL of a node started with --metrics
// 127.0.0.1:0, from `xmppctl --json status`.
func metricsURL(t *testing.T, s *testenv.Server) string {
	t.Helper()
	o, e, code := s.Ctl("--json", "status")
	if code != 0 {
		t.Fatalf("status: %d %s", code, e)
	}
	var st struct{ Listeners []string }
	if err := json.Unmarshal([]byte(o), &st); err != nil {
		t.Fatal(err)
	}
	for _, l := range st.Listeners {
		if u, ok := strings.CutPrefix(l, "metrics "); ok {
			return u
		}
	}
	t.Fatalf("no metrics listener in %q", st.Listeners)
	return ""
}

// Two real clustered xmppd processes: the cluster and raft metrics agree with
// each other, and a killed node shows as down in the survivor's metrics.
func TestOperationsClusterMetrics(t *testing.T) {
	nodes, _ := testenv.StartCluster(t, testenv.ClusterOptions{Nodes: 2, Args: []string{"--metrics", "127.0.0.1:0"}})
	urls := []string{metricsURL(t, nodes[0].Server), metricsURL(t, nodes[1].Server)}
	leaders := 0.0
	for i, u := range urls {
		var m map[string]*dto.MetricFamily
		deadline := time.Now().Add(30 * time.Second)
		for {
			m = scrape(t, u)
			if v, _ := value(m, "xmppd_cluster_members", "state", "up"); v == 2 || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if v, _ := value(m, "xmppd_cluster_members", "state", "up"); v != 2 {
			t.Fatalf("node %d: members up = %v, want 2", i+1, v)
		}
		if v, _ := value(m, "xmppd_storage_has_leader"); v != 1 {
			t.Errorf("node %d: no leader known", i+1)
		}
		if v, _ := value(m, "xmppd_storage_role", "role", "voter"); v != 1 {
			t.Errorf("node %d: not a voter", i+1)
		}
		l, _ := value(m, "xmppd_storage_leader")
		leaders += l
	}
	if leaders != 1 {
		t.Fatalf("%v nodes claim to lead raft", leaders)
	}
	// Raft's own timers, through go-metrics: a write is committed by the leader.
	nodes[0].Register(t, "alice", "secret")
	commits, leaderships := 0.0, 0.0
	for _, u := range urls {
		m := scrape(t, u)
		c, _ := value(m, "xmppd_raft_commit_seconds")
		l, _ := value(m, "xmppd_raft_state_changes_total", "state", "leader")
		commits, leaderships = commits+c, leaderships+l
	}
	if commits < 1 || leaderships < 1 {
		t.Fatalf("raft metrics: %v commits timed, %v leader transitions", commits, leaderships)
	}
	lint(t, urls[0]) // the raft, serf and cluster families too
	nodes[1].Kill()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := scrape(t, urls[0])
		if v, _ := value(m, "xmppd_cluster_members", "state", "down"); v == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("killed node never down in the survivor's metrics:\n%v", m["xmppd_cluster_members"])
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// errorLines returns the log lines at level ERROR.
func errorLines(logs string) []string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "level=ERROR") {
			out = append(out, l)
		}
	}
	return out
}

// A clean stop logs no ERROR (it logged "epoll_wait failed ... use of closed
// file" from the c2s poller on every SIGTERM): a single node with an idle,
// parked client stream, and a node leaving a two-node cluster on SIGTERM.
func TestCleanShutdownLogsNoError(t *testing.T) {
	s := testenv.Start(t, testenv.Options{})
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>", s.Domain)
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(buf); err != nil { // the server's stream header: the stream is up (and idle from here)
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // let the idle stream park in the poller
	s.Signal(syscall.SIGTERM)
	if code := s.ExitCode(20 * time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, s.Logs())
	}
	if errs := errorLines(s.Logs()); len(errs) > 0 {
		t.Errorf("single node: clean stop logged errors:\n%s", strings.Join(errs, "\n"))
	}

	nodes, _ := testenv.StartCluster(t, testenv.ClusterOptions{Nodes: 3})
	n3 := nodes[2]
	n3.Signal(syscall.SIGTERM)
	if code := n3.ExitCode(30 * time.Second); code != 0 {
		t.Fatalf("cluster node exit %d\n%s", code, n3.Logs())
	}
	if errs := errorLines(n3.Logs()); len(errs) > 0 {
		t.Errorf("cluster node: clean stop logged errors:\n%s", strings.Join(errs, "\n"))
	}
}

// One xmppd on an iSCSI LUN of a real tgtd: the initiator's metrics (session
// up, commands, latency) move, and when tgtd dies the node's metrics say so
// (session down, a loss counted, storage no longer durable) until it returns.
func TestOperationsISCSIMetrics(t *testing.T) {
	if err := tgt.Available(); err != nil {
		t.Fatalf("tgtd is a prerequisite of the integration tier: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := tgt.Start(ctx, tgt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	img := filepath.Join(t.TempDir(), "lun.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	const iqn = "iqn.2025-01.org.xedge.test:ops"
	if err := d.AddTarget(1, iqn, map[int]string{1: img}); err != nil {
		t.Fatal(err)
	}
	s := testenv.Start(t, testenv.Options{Args: []string{"--storage", fmt.Sprintf("iscsi://%s/%s/1", d.Portal, iqn), "--metrics", "127.0.0.1:0"}})
	url := metricsURL(t, s)
	s.Register(t, "alice", "secret") // a durable write on the LUN
	m := scrape(t, url)
	lbl := []string{"target", iqn, "lun", "1"}
	if v, _ := value(m, "xmppd_iscsi_connected", lbl...); v != 1 {
		t.Fatalf("iscsi_connected = %v", v)
	}
	if v, _ := value(m, "xmppd_iscsi_commands_total", lbl...); v < 2 {
		t.Fatalf("iscsi_commands_total = %v", v)
	}
	if v, _ := value(m, "xmppd_iscsi_command_latency_seconds", lbl...); v < 2 {
		t.Fatalf("latency samples = %v", v)
	}
	if v, _ := value(m, "xmppd_storage_mode", "mode", "durable"); v != 1 {
		t.Fatalf("storage not durable on a working LUN")
	}
	errs0, ok := value(m, "xmppd_iscsi_command_errors_total", lbl...)
	if !ok {
		t.Fatal("no xmppd_iscsi_command_errors_total for the LUN")
	}
	d.Kill()
	s.Ctl("register", "bob", "secret") // a write notices the loss at once
	deadline := time.Now().Add(30 * time.Second)
	for {
		m = scrape(t, url)
		up, _ := value(m, "xmppd_iscsi_connected", lbl...)
		lost, _ := value(m, "xmppd_iscsi_losses_total", lbl...)
		durable, _ := value(m, "xmppd_storage_mode", "mode", "durable")
		errs, _ := value(m, "xmppd_iscsi_command_errors_total", lbl...)
		if up == 0 && lost >= 1 && durable == 0 && errs > errs0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after tgtd died: connected %v, losses %v, durable %v, command errors %v -> %v", up, lost, durable, errs0, errs)
		}
		s.Ctl("register", fmt.Sprintf("u%d", time.Now().UnixNano()), "secret")
		time.Sleep(200 * time.Millisecond)
	}
}
