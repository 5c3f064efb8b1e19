// Command noded runs one replicated.Store as its own process, for the
// multi-process integration tests of storage/replicated (real processes,
// SIGKILL, restart from the device). It reads commands on stdin, one per line,
// and answers each with one JSON line on stdout:
//
//	put TABLE KEY VALUE   -> {"ok":true} or {"err":"..."}
//	get TABLE KEY         -> {"ok":true,"value":"...","found":true}
//	count TABLE           -> {"ok":true,"n":N}
//	status                -> {"ok":true,"status":{...}}
//	declare TABLE         -> {"ok":true}
//
// It prints {"ready":true,"addr":"...","id":"..."} once started.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"xedge/storage"
	"xedge/storage/blockdev"
	"xedge/storage/replicated"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "noded:", err)
		os.Exit(1)
	}
}

func run() error {
	name := flag.String("name", "", "node name")
	addr := flag.String("addr", "127.0.0.1:0", "cluster address")
	join := flag.String("join", "", "comma-separated seeds")
	dev := flag.String("storage", "", "file:PATH[?size=BYTES]")
	data := flag.String("data", "", "data dir")
	key := flag.String("key", "", "cluster key")
	flag.Parse()
	cfg := replicated.Config{NodeName: *name, ClusterAddr: *addr, DataDir: *data, ClusterKey: []byte(*key),
		Logger:           slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
		LeaderLeaseTimeout: 300 * time.Millisecond, ReportInterval: 100 * time.Millisecond}
	if *join != "" {
		cfg.Join = strings.Split(*join, ",")
	}
	if *dev != "" {
		path, size, err := blockdev.ParseSpec(*dev)
		if err != nil {
			return err
		}
		f, err := blockdev.OpenFile(path, size)
		if err != nil {
			return err
		}
		defer f.Close()
		cfg.Device = f
	}
	s, err := replicated.New(cfg)
	if err != nil {
		return err
	}
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_ = s.Stop(sctx)
	}()
	out := json.NewEncoder(os.Stdout)
	_ = out.Encode(map[string]any{"ready": true, "addr": s.Addr(), "id": s.ID()})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		resp := map[string]any{"ok": true}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var err error
		switch {
		case f[0] == "declare" && len(f) == 2:
			err = s.Declare(cctx, storage.TableSpec{Name: f[1]})
		case f[0] == "declare" && len(f) == 3 && f[2] == "ram":
			err = s.Declare(cctx, storage.TableSpec{Name: f[1], Copy: storage.RAM})
		case f[0] == "tables":
			resp["tables"] = s.Tables()
		case f[0] == "put" && len(f) == 4:
			err = s.Apply(cctx, storage.Put(f[1], f[2], []byte(f[3])))
		case f[0] == "get" && len(f) == 3:
			var t storage.Table
			if t, err = s.Durable(f[1]); err == nil {
				var v []byte
				var ok bool
				v, ok, err = t.Get(f[2])
				resp["value"], resp["found"] = string(v), ok
			}
		case f[0] == "count" && len(f) == 2:
			var t storage.Table
			if t, err = s.Durable(f[1]); err == nil {
				var n int
				n, err = t.Count("")
				resp["n"] = n
			}
		case f[0] == "status":
			resp["status"] = s.Status()
		default:
			err = fmt.Errorf("bad command %q", in.Text())
		}
		cancel()
		if err != nil {
			resp = map[string]any{"err": err.Error()}
		}
		_ = out.Encode(resp)
	}
	return in.Err()
}
