// Command piefxis-bench measures a XEP-0227 migration at scale: it generates a
// file of N users (default 100,000) shaped like a real site's export — SCRAM-SHA-1
// credentials as ejabberd and Prosody export them, 10 roster items each (mutual
// subscriptions in groups), a vCard, bookmarks for every 10th user, an offline
// message for every 20th, a blocked JID for every 50th — and imports it with
// `xmppctl import-piefxis` into a fresh xmppd running its raft-replicated store (a
// one-node cluster: --cluster-addr, the durable path a cluster takes), printing
// xmppctl's progress on the console. Then it checks the accounts (count, a
// password of the first, middle and last user), exports everything with
// export-piefxis, and imports a second file of users with plaintext passwords
// (each costs two PBKDF2 derivations, 4096 iterations) to give that rate too.
//
// Run: go run ./bench/piefxis [-users 100000] [-plaintext 5000]. Results:
// bench/results/piefxis-<date>.json and .md.
package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"xedge/internal/freeport"
	"xedge/xmppd/piefxis"
	"xedge/xmppd/scramkey"
	"xedge/xmppd/xmlstream"
)

const (
	domain   = "bench.example"
	password = "bench-password"
)

type importRun struct {
	Users        int            `json:"users"`
	CPUSeconds   float64        `json:"xmppd_cpu_seconds"` // user+system CPU xmppd spent (load-independent)
	Credentials  string         `json:"credentials"`
	FileBytes    int64          `json:"file_bytes"`
	Seconds      float64        `json:"seconds"`
	UsersPerSec  float64        `json:"users_per_second"`
	ProgressRows int            `json:"progress_lines"`
	Summary      map[string]any `json:"summary"`
}

type report struct {
	Date         string            `json:"date"`
	Host         map[string]string `json:"host"`
	Store        string            `json:"store"`
	Import       importRun         `json:"import"`
	Checks       []string          `json:"checks"`
	ExportSecs   float64           `json:"export_seconds"`
	ExportBytes  int64             `json:"export_bytes"`
	Plaintext    *importRun        `json:"plaintext,omitempty"`
	TargetSecs   float64           `json:"target_seconds"`
	Met          bool              `json:"target_met"`
	ProgressTail []string          `json:"progress_sample"`
}

func main() {
	users := flag.Int("users", 100000, "users in the generated file")
	plain := flag.Int("plaintext", 5000, "users of the second file, with plaintext passwords (0: skip)")
	out := flag.String("out", "bench/results", "directory for the results")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*users, *plain, *out, log); err != nil {
		log.Error("piefxis bench failed", "err", err)
		os.Exit(1)
	}
}

// sharedKeys are 64 SCRAM-SHA-1 credentials of password with distinct salts,
// given to the users round robin (deriving 100,000 would take minutes; the
// importer does no work per key either way).
func sharedKeys() []piefxis.SCRAM {
	out := make([]piefxis.SCRAM, 64)
	for i := range out {
		salt := make([]byte, 16)
		rand.Read(salt)
		k, _ := scramkey.Derive(scramkey.SHA1, password, salt, 4096)
		out[i] = piefxis.SCRAM{Mechanism: scramkey.SHA1, Iterations: 4096, Salt: salt, StoredKey: k.Stored, ServerKey: k.Server}
	}
	return out
}

func userName(i int) string { return "user" + strconv.Itoa(i) }

// generate writes n users to path (SCRAM credentials, or plaintext passwords if plain).
func generate(path string, n int, plain bool, prefix string) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	w, err := piefxis.NewWriter(f)
	if err != nil {
		return 0, err
	}
	w.StartHost(domain)
	var keys []piefxis.SCRAM
	if !plain {
		keys = sharedKeys()
	}
	for i := 0; i < n; i++ {
		u := &piefxis.User{Name: prefix + userName(i)}
		if plain {
			u.Password = password
		} else {
			u.SCRAM = []piefxis.SCRAM{keys[i%len(keys)]}
		}
		for k := 1; k <= 10; k++ {
			c := (i + k*7919) % n
			if c == i {
				continue
			}
			u.Roster = append(u.Roster, piefxis.RosterItem{JID: prefix + userName(c) + "@" + domain, Name: "Contact " + strconv.Itoa(c),
				Subscription: "both", Groups: []string{"Group " + strconv.Itoa(k%3)}})
		}
		u.VCard = xmlstream.New(piefxis.NSVCard, "vCard").Append(
			xmlstream.New(piefxis.NSVCard, "FN").AppendText("User Number "+strconv.Itoa(i)),
			xmlstream.New(piefxis.NSVCard, "NICKNAME").AppendText("u"+strconv.Itoa(i)))
		if i%10 == 0 {
			u.Private = []*xmlstream.Element{xmlstream.New("storage:bookmarks", "storage").Append(
				xmlstream.New("storage:bookmarks", "conference", "jid", "room"+strconv.Itoa(i%100)+"@conference."+domain, "autojoin", "true"))}
		}
		if i%20 == 0 {
			u.Offline = []*xmlstream.Element{xmlstream.New(piefxis.NSClient, "message", "from", prefix+userName((i+1)%n)+"@"+domain,
				"to", u.Name+"@"+domain, "type", "chat").Append(
				xmlstream.New("urn:xmpp:delay", "delay", "from", domain, "stamp", "2026-01-02T03:04:05Z"),
				xmlstream.New(piefxis.NSClient, "body").AppendText("left while you were away"))}
		}
		if i%50 == 0 {
			u.Blocklist = []string{"spammer" + strconv.Itoa(i) + "@spam.example"}
		}
		if err := w.User(u); err != nil {
			return 0, err
		}
	}
	if err := w.Close(); err != nil {
		return 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

type xmppd struct {
	cmd  *exec.Cmd
	ctl  string
	sock string
}

func (x *xmppd) run(args ...string) (string, error) {
	out, err := exec.Command(x.ctl, append([]string{"--socket", x.sock}, args...)...).CombinedOutput()
	return string(out), err
}

// cpu returns xmppd's user+system CPU seconds so far.
func (x *xmppd) cpu() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", x.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100
}

// importFile runs xmppctl import-piefxis, echoing its progress lines.
func (x *xmppd) importFile(path string) (float64, []string, error) {
	cmd := exec.Command(x.ctl, "--socket", x.sock, "import-piefxis", path)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, nil, err
	}
	var lines []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			fmt.Println("  | " + sc.Text())
			lines = append(lines, sc.Text())
		}
	}()
	err := cmd.Wait()
	secs := time.Since(start).Seconds()
	pw.Close()
	<-done
	return secs, lines, err
}

func (x *xmppd) status() (map[string]any, error) {
	o, err := x.run("--json", "piefxis-status")
	if err != nil {
		return nil, fmt.Errorf("%v: %s", err, o)
	}
	var st map[string]any
	return st, json.Unmarshal([]byte(o), &st)
}

func run(users, plain int, outDir string, log *slog.Logger) error {
	tmp, err := os.MkdirTemp("", "piefxis-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	build := exec.Command("go", "build", "-o", tmp+"/", "./xmppd/cmd/xmppd", "./xmppd/cmd/xmppctl")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	file := filepath.Join(tmp, "site.xml")
	t0 := time.Now()
	size, err := generate(file, users, false, "")
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	log.Info("generated", "users", users, "bytes", size, "seconds", time.Since(t0).Seconds())

	key := make([]byte, 32)
	rand.Read(key)
	keyFile := filepath.Join(tmp, "cluster.key")
	os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)), 0o600)
	x := &xmppd{ctl: filepath.Join(tmp, "xmppctl"), sock: filepath.Join(tmp, "admin.sock")}
	logf, _ := os.Create(filepath.Join(tmp, "xmppd.log"))
	c2sAddr, err := freeport.Addr("127.0.0.1")
	if err != nil {
		return err
	}
	clusterAddr, err := freeport.Addr("127.0.0.1")
	if err != nil {
		return err
	}
	x.cmd = exec.Command(filepath.Join(tmp, "xmppd"), "--domain", domain, "--data", filepath.Join(tmp, "data"), "--admin-socket", x.sock,
		"--c2s", c2sAddr, "--c2s-tls", "", "--cluster-addr", clusterAddr, "--cluster-key-file", keyFile, "--node-name", "n1", "--log-level", "info")
	x.cmd.Stdout, x.cmd.Stderr = logf, logf
	if err := x.cmd.Start(); err != nil {
		return err
	}
	defer func() { x.cmd.Process.Kill(); x.cmd.Wait() }()
	for i := 0; ; i++ {
		if o, err := x.run("storage"); err == nil && strings.Contains(o, "leader") {
			break
		}
		if i > 300 {
			return fmt.Errorf("xmppd not ready (log %s)", logf.Name())
		}
		time.Sleep(100 * time.Millisecond)
	}
	rep := report{Date: time.Now().UTC().Format(time.RFC3339), TargetSecs: 60,
		Store: "replicated (raft, one voter: --cluster-addr), durable on the data directory",
		Host:  map[string]string{"cpus": strconv.Itoa(runtime.NumCPU()), "go": runtime.Version(), "loadavg": loadavg()}}
	fmt.Printf("importing %d users (%.1f MiB) with xmppctl import-piefxis:\n", users, float64(size)/(1<<20))
	cpu0 := x.cpu()
	secs, lines, err := x.importFile(file)
	cpu := x.cpu() - cpu0
	if err != nil {
		return fmt.Errorf("import: %w: %s", err, strings.Join(lines, "\n"))
	}
	st, err := x.status()
	if err != nil {
		return err
	}
	sum, _ := st["summary"].(map[string]any)
	rep.Import = importRun{Users: users, Credentials: "SCRAM-SHA-1 (as exported by ejabberd and Prosody)", FileBytes: size,
		Seconds: secs, CPUSeconds: cpu, UsersPerSec: float64(users) / secs, ProgressRows: len(lines), Summary: sum}
	var prog []string
	for _, l := range lines {
		if strings.HasPrefix(l, "import:") {
			prog = append(prog, l)
		}
	}
	rep.ProgressTail = prog
	if len(prog) > 12 {
		rep.ProgressTail = append(prog[:6:6], prog[len(prog)-6:]...)
	}
	rep.Met = secs < rep.TargetSecs && sum != nil && sum["created"] == float64(users)
	// Checks.
	o, err := x.run("stats", "registeredusers")
	rep.Checks = append(rep.Checks, "registeredusers: "+strings.TrimSpace(o))
	if err != nil || strings.TrimSpace(o) != strconv.Itoa(users) {
		rep.Met = false
	}
	for _, i := range []int{0, users / 2, users - 1} {
		_, err := x.run("check_password", userName(i), domain, password)
		rep.Checks = append(rep.Checks, fmt.Sprintf("check_password %s: %v", userName(i), err == nil))
		if err != nil {
			rep.Met = false
		}
	}
	// Export.
	exp := filepath.Join(tmp, "export")
	t1 := time.Now()
	if o, err := x.run("export-piefxis", exp); err != nil {
		return fmt.Errorf("export: %v: %s", err, o)
	}
	rep.ExportSecs = time.Since(t1).Seconds()
	if files, _ := filepath.Glob(filepath.Join(exp, "*.xml")); len(files) == 1 {
		if fi, err := os.Stat(files[0]); err == nil {
			rep.ExportBytes = fi.Size()
		}
	}
	// Plaintext passwords.
	if plain > 0 {
		pf := filepath.Join(tmp, "plain.xml")
		psize, err := generate(pf, plain, true, "p")
		if err != nil {
			return err
		}
		fmt.Printf("importing %d users with plaintext passwords:\n", plain)
		pcpu0 := x.cpu()
		psecs, plines, err := x.importFile(pf)
		pcpu := x.cpu() - pcpu0
		if err != nil {
			return fmt.Errorf("plaintext import: %w: %s", err, strings.Join(plines, "\n"))
		}
		pst, _ := x.status()
		psum, _ := pst["summary"].(map[string]any)
		rep.Plaintext = &importRun{Users: plain, Credentials: "plaintext -> SCRAM-SHA-1 + SCRAM-SHA-256 (4096 iterations each)", FileBytes: psize,
			Seconds: psecs, CPUSeconds: pcpu, UsersPerSec: float64(plain) / psecs, ProgressRows: len(plines), Summary: psum}
	}
	return write(rep, outDir)
}

// niceness is this process's nice value (xmppd inherits it): on a shared
// machine other processes' priorities decide how much CPU xmppd gets.
func niceness() string {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 17 {
		return "?"
	}
	return f[16]
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

func write(rep report, dir string) error {
	stamp := time.Now().UTC().Format("2006-01-02T15-04Z")
	base := filepath.Join(dir, "piefxis-"+stamp)
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(base+".json", append(b, '\n'), 0o644); err != nil {
		return err
	}
	var md strings.Builder
	fmt.Fprintf(&md, "# XEP-0227 import at scale, %s\n\n", rep.Date)
	fmt.Fprintf(&md, "`go run ./bench/piefxis` on a %s-CPU host (load average before: %s; nice %s), xmppd with its %s.\n\n", rep.Host["cpus"], rep.Host["loadavg"], rep.Host["nice"], rep.Store)
	im := rep.Import
	fmt.Fprintf(&md, "| run | users | credentials | file MiB | seconds | users/s | xmppd CPU s | rows | batches |\n|---|---:|---|---:|---:|---:|---:|---:|---:|\n")
	row := func(name string, r importRun) {
		fmt.Fprintf(&md, "| %s | %d | %s | %.1f | %.1f | %.0f | %.1f | %v | %v |\n", name, r.Users, r.Credentials, float64(r.FileBytes)/(1<<20),
			r.Seconds, r.UsersPerSec, r.CPUSeconds, r.Summary["rows"], r.Summary["batches"])
	}
	row("import-piefxis", im)
	if rep.Plaintext != nil {
		row("import-piefxis, plaintext", *rep.Plaintext)
	}
	fmt.Fprintf(&md, "\nEach user: 10 roster items (both, a group), a vCard; every 10th bookmarks, every 20th an offline message, every 50th a blocked JID.\n")
	fmt.Fprintf(&md, "\nTarget: %d users in under %.0f s: **%v** (%.1f s).\n\n", im.Users, rep.TargetSecs, rep.Met, im.Seconds)
	fmt.Fprintf(&md, "Checks after the import: %s.\n\n", strings.Join(rep.Checks, "; "))
	fmt.Fprintf(&md, "export-piefxis of the same accounts: %.1f s, %.1f MiB.\n\n", rep.ExportSecs, float64(rep.ExportBytes)/(1<<20))
	if rep.Plaintext != nil && rep.Plaintext.UsersPerSec > 0 {
		fmt.Fprintf(&md, "Plaintext passwords cost two PBKDF2 derivations per user: at %.0f users/s, %d plaintext users would take %.0f s.\n\n",
			rep.Plaintext.UsersPerSec, im.Users, float64(im.Users)/rep.Plaintext.UsersPerSec)
	}
	fmt.Fprintf(&md, "Progress as xmppctl printed it (first and last lines):\n\n```\n%s\n```\n", strings.Join(rep.ProgressTail, "\n"))
	if err := os.WriteFile(base+".md", []byte(md.String()), 0o644); err != nil {
		return err
	}
	fmt.Print(md.String())
	return nil
}
