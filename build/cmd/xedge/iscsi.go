package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"xedge/iscsi"
	"xedge/iscsi/iscsibench"
)

func init() {
	register("iscsi", "talk to iSCSI targets: discover, inq, bench (see `xedge iscsi help`)", runISCSI)
}

const iscsiUsage = `usage: xedge iscsi COMMAND [FLAGS] URL

URL: iscsi://[user[:secret]@]host[:port]/target-iqn/lun
     query: digest=crc32c, target_user=, target_secret= (mutual CHAP),
            initiator=IQN, timeout=3s

commands:
  discover URL     list the targets a portal offers (SendTargets; target and LUN unused)
  inq URL          log in, print INQUIRY, capacity and the negotiated parameters
  bench URL        4 KiB durable write latency and sequential write throughput
                   (WRITES TO THE LUN: needs --overwrite)

flags (before the URL):
  --json           machine-readable output
  --v              log the initiator's state transitions to stderr
bench flags:
  --overwrite      confirm that the LUN's contents from --offset on may be destroyed
  --offset BYTES   where to start writing (default 0)
  --writes N       4 KiB writes timed (default 2000)
  --seq-mib N      MiB written sequentially (default 256)
`

func runISCSI(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(os.Stderr, iscsiUsage)
		if len(args) == 0 {
			return errors.New("missing command")
		}
		return nil
	}
	sub := args[0]
	fs := flag.NewFlagSet("xedge iscsi "+sub, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, iscsiUsage) }
	asJSON := fs.Bool("json", false, "JSON output")
	verbose := fs.Bool("v", false, "log state transitions")
	overwrite := fs.Bool("overwrite", false, "bench: allow writing to the LUN")
	offset := fs.Int64("offset", 0, "bench: first byte written")
	writes := fs.Int("writes", 2000, "bench: 4 KiB writes timed")
	seqMiB := fs.Int("seq-mib", 256, "bench: MiB written sequentially")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("%s needs exactly one URL", sub)
	}
	cfg, err := iscsi.ParseURL(fs.Arg(0))
	if err != nil {
		return err
	}
	var logOut io.Writer = io.Discard
	if *verbose {
		logOut = os.Stderr
	}
	cfg.Logger = slog.New(slog.NewTextHandler(logOut, nil))
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()

	switch sub {
	case "discover":
		dctx, dcancel := context.WithTimeout(ctx, 15*time.Second)
		defer dcancel()
		ts, err := iscsi.Discover(dctx, cfg)
		if errors.Is(err, iscsi.ErrAuth) && cfg.User != "" {
			// Many targets (tgtd among them) authenticate normal sessions but
			// not discovery: list without credentials, and say so.
			nc := cfg
			nc.User, nc.Secret, nc.TargetUser, nc.TargetSecret = "", "", "", ""
			if ts2, err2 := iscsi.Discover(dctx, nc); err2 == nil {
				fmt.Fprintln(os.Stderr, "note: the portal refused the credentials for discovery; listed without authentication")
				ts, err = ts2, nil
			}
		}
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(ts)
		}
		if len(ts) == 0 {
			fmt.Println("no targets")
		}
		for _, t := range ts {
			fmt.Println(t.Name)
			for _, a := range t.Addresses {
				fmt.Println("    portal", a)
			}
		}
		return nil

	case "inq":
		dctx, dcancel := context.WithTimeout(ctx, 15*time.Second)
		defer dcancel()
		d, err := iscsi.Dial(dctx, cfg)
		if err != nil {
			return err
		}
		defer d.Close()
		info := struct {
			URL       string        `json:"url"`
			Inquiry   iscsi.Inquiry `json:"inquiry"`
			Size      int64         `json:"size_bytes"`
			BlockSize int           `json:"block_size"`
			Params    iscsi.Params  `json:"params"`
		}{cfg.Redacted(), d.Inquiry(), d.Size(), d.BlockSize(), d.Stats().Params}
		if *asJSON {
			return printJSON(info)
		}
		p := info.Params
		fmt.Printf("target      %s\n", info.URL)
		fmt.Printf("vendor      %s\nproduct     %s\nrevision    %s\n", info.Inquiry.Vendor, info.Inquiry.Product, info.Inquiry.Revision)
		if info.Inquiry.Serial != "" {
			fmt.Printf("serial      %s\n", info.Inquiry.Serial)
		}
		fmt.Printf("capacity    %d bytes (%.1f GiB), %d-byte blocks\n", info.Size, float64(info.Size)/(1<<30), info.BlockSize)
		fmt.Printf("digests     header %s, data %s\n", onOff(p.HeaderDigest), onOff(p.DataDigest))
		fmt.Printf("negotiated  ImmediateData=%s InitialR2T=%s FirstBurstLength=%d MaxBurstLength=%d\n",
			yes(p.ImmediateData), yes(p.InitialR2T), p.FirstBurstLength, p.MaxBurstLength)
		fmt.Printf("            MaxRecvDataSegmentLength=%d (ours) %d (target's) MaxOutstandingR2T=%d\n",
			p.MaxRecvDSL, p.TargetMaxRecvDSL, p.MaxOutstandingR2T)
		return nil

	case "bench":
		if !*overwrite {
			return errors.New("bench writes to the LUN and destroys its data from --offset on; pass --overwrite to confirm")
		}
		dctx, dcancel := context.WithTimeout(ctx, 15*time.Second)
		d, err := iscsi.Dial(dctx, cfg)
		dcancel()
		if err != nil {
			return err
		}
		defer d.Close()
		o := iscsibench.Options{Writes: *writes, SeqBytes: int64(*seqMiB) << 20, Offset: *offset}
		if need := iscsibench.Needed(o); *offset+need > d.Size() {
			return fmt.Errorf("the LUN has %d bytes; the run needs %d from offset %d (lower --seq-mib)", d.Size(), need, *offset)
		}
		r, err := iscsibench.Run(ctx, d, o)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(r)
		}
		name := "iSCSI (FUA)"
		if cfg.WriteBack {
			name = "iSCSI (write-back)"
		}
		fmt.Printf("target %s\n", cfg.Redacted())
		iscsibench.Print(os.Stdout, name, r)
		return nil
	}
	fs.Usage()
	return fmt.Errorf("unknown iscsi command %q", sub)
}

func printJSON(v any) error {
	e := json.NewEncoder(os.Stdout)
	e.SetIndent("", "  ")
	return e.Encode(v)
}

func onOff(b bool) string {
	if b {
		return "CRC32C"
	}
	return "none"
}

func yes(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}
