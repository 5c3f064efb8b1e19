package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"xedge/xmppd/admin"
)

// xmppctl import-piefxis FILE and export-piefxis DIR (XEP-0227, the migration
// feature): xmppd runs the job in the background; xmppctl starts it, then polls
// piefxis-status and prints its progress until it ends. Paths are made absolute
// here, since xmppd reads and writes them itself.

func init() {
	registerClient(Command{"import-piefxis", "FILE|DIR [--skip-unknown-hosts]", "import accounts, rosters, vCards, private XML, offline messages, block and privacy lists from a XEP-0227 file (ejabberd's export_piefxis, Prosody's xep0227 store), each host's users into that host, with progress", 1, 2}, follow("import-piefxis"))
	registerClient(Command{"export-piefxis", "DIR [HOST]", "export every account (of HOST: that host's only) and its data as XEP-0227 files written in DIR (ejabberd's layout: a main file and one file per host), with progress", 1, 2}, follow("export-piefxis"))
	register(Command{"piefxis-status", "", "progress or result of the running or last import-piefxis/export-piefxis", 0, 0}, renderPIEFXIS)
	details["import-piefxis"] = "The file is read by xmppd (give a path on its host). ejabberd: `ejabberdctl export_piefxis DIR` writes DIR/<stamp>.xml\n" +
		"and one file per host that it includes: import the first. Prosody: prosody-migrator with output type xep0227 writes one\n" +
		"file per user (USER@HOST.xml): give that directory.\n" +
		"Accounts that exist keep their password; their roster items, vCard, private XML are replaced and offline messages added.\n" +
		"Plaintext passwords become salted SCRAM keys (never stored as such); SCRAM credentials are kept as exported.\n" +
		"Each <host/>'s users go to that host (alice@a.example and alice@b.example stay two accounts). A file naming a host\n" +
		"xmppd does not serve is refused before anything is written (as ejabberd stops at an unknown host); with\n" +
		"--skip-unknown-hosts the served hosts are imported and the other hosts' users counted as other_hosts."
	details["export-piefxis"] = "xmppd writes, as ejabberdctl export_piefxis does, DIR/<stamp>.xml including DIR/<stamp>_<host>.xml for each\n" +
		"served host (stamp: UTC time, 20060102-150405; DIR on xmppd's host), complete or not at all. Import the main file.\n" +
		"Passwords are exported as SCRAM credentials (urn:xmpp:pie:0#scram): xmppd never has the plaintext."
}

// pollEvery is how often xmppctl asks for progress; a line is printed at most
// every printEvery.
const (
	pollEvery  = 250 * time.Millisecond
	printEvery = time.Second
)

// follow returns the client side of cmd (import-piefxis or export-piefxis).
func follow(cmd string) func(ctx context.Context, socket string, args []string, asJSON bool, stdout, stderr io.Writer) int {
	return func(ctx context.Context, socket string, args []string, asJSON bool, stdout, stderr io.Writer) int {
		if cmd == "import-piefxis" && len(args) == 2 && args[1] != "--skip-unknown-hosts" {
			fmt.Fprintf(stderr, "xmppctl: %s: unknown option %q (--skip-unknown-hosts)\n", cmd, args[1])
			return 2
		}
		return piefxisRun(ctx, socket, cmd, args[0], args[1:], asJSON, stdout, stderr)
	}
}

func call(ctx context.Context, socket, cmd string, args []string) (admin.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return admin.Call(ctx, socket, admin.Request{Cmd: cmd, Args: args})
}

// piefxisRun starts cmd on path and follows the job.
func piefxisRun(ctx context.Context, socket, cmd, path string, opts []string, asJSON bool, stdout, stderr io.Writer) int {
	abs, err := filepath.Abs(path)
	if err != nil {
		fmt.Fprintf(stderr, "xmppctl: %s: %v\n", cmd, err)
		return 2
	}
	resp, err := call(ctx, socket, cmd, append([]string{abs}, opts...))
	if err != nil {
		fmt.Fprintf(stderr, "xmppctl: %s\n", explain(socket, err))
		return 3
	}
	if !resp.OK {
		fmt.Fprintf(stderr, "xmppctl: %s: %s\n", cmd, resp.Error)
		return 1
	}
	var last time.Time
	failures := 0
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintf(stderr, "xmppctl: %s: stopped following the job (it goes on in xmppd: xmppctl piefxis-status): %v\n", cmd, ctx.Err())
			return 1
		case <-time.After(pollEvery):
		}
		resp, err := call(ctx, socket, "piefxis-status", nil)
		if err != nil || !resp.OK {
			if failures++; failures >= 20 {
				if err != nil {
					fmt.Fprintf(stderr, "xmppctl: %s\n", explain(socket, err))
				} else {
					fmt.Fprintf(stderr, "xmppctl: piefxis-status: %s\n", resp.Error)
				}
				return 3
			}
			continue
		}
		failures = 0
		var st map[string]any
		if err := json.Unmarshal(resp.Result, &st); err != nil {
			fmt.Fprintf(stderr, "xmppctl: piefxis-status: %v\n", err)
			return 1
		}
		state, _ := st["state"].(string)
		if state == "running" {
			if !asJSON && time.Since(last) >= printEvery {
				fmt.Fprintln(stdout, progressLine(st))
				last = time.Now()
			}
			continue
		}
		if asJSON {
			printJSON(stdout, st)
		} else {
			_ = renderPIEFXIS(stdout, nil, st)
		}
		if state != "done" {
			return 1
		}
		return 0
	}
}

func num(v any) float64 { f, _ := v.(float64); return f }

func progressLine(st map[string]any) string {
	secs := num(st["seconds"])
	rate := 0.0
	if secs > 0 {
		rate = num(st["users"]) / secs
	}
	if st["kind"] == "export" {
		pct := 0.0
		if t := num(st["total"]); t > 0 {
			pct = 100 * num(st["users"]) / t
		}
		return fmt.Sprintf("export: %.0f of %.0f users (%.0f%%), %.0f users/s, %.1f s", num(st["users"]), num(st["total"]), pct, rate, secs)
	}
	pct := 0.0
	if t := num(st["bytes_total"]); t > 0 {
		pct = 100 * num(st["bytes_read"]) / t
	}
	return fmt.Sprintf("import: %.0f users read (%.1f of %.1f MiB, %.0f%%), %.0f committed in %.0f batches, %.0f users/s, %.1f s",
		num(st["users"]), num(st["bytes_read"])/(1<<20), num(st["bytes_total"])/(1<<20), pct, num(st["written"]), num(st["batches"]), rate, secs)
}

func renderPIEFXIS(w io.Writer, _ []string, v any) error {
	st, ok := v.(map[string]any)
	if !ok {
		kv(w, v, "")
		return nil
	}
	switch st["state"] {
	case "none":
		fmt.Fprintln(w, "no import or export since xmppd started")
		return nil
	case "running":
		fmt.Fprintln(w, progressLine(st))
		return nil
	}
	sum, _ := st["summary"].(map[string]any)
	if st["state"] == "failed" {
		fmt.Fprintf(w, "%s of %s FAILED after %.1f s: %s\n", cell(st["kind"]), cell(st["file"]), num(st["seconds"]), cell(st["error"]))
	} else {
		fmt.Fprintf(w, "%s of %s done in %.1f s\n", cell(st["kind"]), cell(sum["file"]), num(st["seconds"]))
	}
	if sum == nil {
		return nil
	}
	warn := asList(sum["warnings"])
	delete(sum, "warnings")
	delete(sum, "file")
	kv(w, sum, "  ")
	if len(warn) > 0 {
		fmt.Fprintf(w, "warnings (%d):\n", len(warn))
		for _, x := range warn {
			fmt.Fprintf(w, "  %s\n", cell(x))
		}
	}
	return nil
}
