// Command iscsi-bench measures xedge's userspace iSCSI initiator against a
// local tgtd with a file-backed LUN, next to dd oflag=dsync on the same backing
// file in the same run:
//
//   - 4 KiB durable write latency (p50/p99), one write at a time at increasing
//     offsets, as storage's log appends; WRITE(16) with FUA through tgtd, which
//     answers FUA with fdatasync. dd writes the same region with O_DSYNC; a Go
//     O_DSYNC loop on the file gives the local latency distribution.
//   - sequential write throughput, 1 MiB writes, FUA each, 4 in flight, against
//     dd bs=1M oflag=dsync.
//
// Run it as root (tgtd needs it): go run ./bench/iscsi. Results go to
// bench/iscsi/results/<date>.json; the README holds the table.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"xedge/iscsi"
	"xedge/iscsi/iscsibench"
	"xedge/iscsi/tgt"
)

type ddResult struct {
	Command string  `json:"command"`
	Seconds float64 `json:"seconds"`
	PerOpUS float64 `json:"per_write_us,omitempty"`
	MiBps   float64 `json:"mib_s,omitempty"`
}

type report struct {
	Date       string             `json:"date"`
	Host       map[string]string  `json:"host"`
	Options    iscsibench.Options `json:"options"`
	ISCSI      iscsibench.Result  `json:"iscsi"`
	ISCSICRC   *iscsibench.Result `json:"iscsi_crc32c,omitempty"`
	LocalDsync iscsibench.Latency `json:"local_odsync_4k"`
	// References that explain the gap between the two above: a local
	// pwrite+fdatasync loop (what tgtd does for a FUA write), and iSCSI writes
	// without FUA acknowledged from tgtd's page cache (the protocol's own cost;
	// not durable).
	LocalFdatasync iscsibench.Latency `json:"local_pwrite_fdatasync_4k"`
	ISCSINoFUA     iscsibench.Latency `json:"iscsi_no_fua_not_durable_4k"`
	// Queue-depth-1 4 KiB reads, ours against libiscsi's iscsi-perf (a C
	// initiator) on the same tgtd: the initiators' own overhead side by side.
	ReadQD1      iscsibench.Latency `json:"iscsi_read_4k_qd1"`
	ReadQD1IOPS  float64            `json:"iscsi_read_4k_qd1_iops"`
	LibiscsiIOPS float64            `json:"libiscsi_perf_read_4k_qd1_iops,omitempty"`
	DD4K         ddResult           `json:"dd_4k_dsync"`
	DDSeq        ddResult           `json:"dd_seq_dsync"`
	RatioP50DD   float64            `json:"ratio_iscsi_p50_to_dd"`
	RatioLocal   float64            `json:"ratio_iscsi_p50_to_local_p50"`
	TargetMet    bool               `json:"target_p50_at_most_2x_dd"`
	Stats        iscsi.Stats        `json:"initiator"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "iscsi-bench:", err)
		os.Exit(1)
	}
}

func run() error {
	work := flag.String("work", "bench/work/iscsi", "directory for the backing file (on the disk to measure; not tmpfs)")
	out := flag.String("out", "bench/iscsi/results", "directory for the JSON result")
	writes := flag.Int("writes", 2000, "4 KiB durable writes timed")
	seqMiB := flag.Int("seq-mib", 256, "MiB written sequentially")
	crc := flag.Bool("crc", true, "also measure with CRC32C header and data digests")
	rounds := flag.Int("rounds", 5, "interleaved rounds of the 4 KiB latency measurement")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := tgt.Available(); err != nil {
		return err
	}
	if err := os.MkdirAll(*work, 0o755); err != nil {
		return err
	}
	opts := iscsibench.Options{Writes: *writes, SeqBytes: int64(*seqMiB) << 20}.WithDefaults()
	latOff := int64(0)
	seqOff := int64(32 << 20)
	size := seqOff + opts.SeqBytes + (32 << 20)
	lun := filepath.Join(*work, "lun.img")
	defer os.Remove(lun)

	// Allocate every block first, so neither side pays for block allocation.
	fmt.Printf("preparing %d MiB backing file %s\n", size>>20, lun)
	if err := sh("dd", "if=/dev/zero", "of="+lun, "bs=1M", fmt.Sprintf("count=%d", size>>20), "conv=fsync", "status=none"); err != nil {
		return err
	}

	logf, _ := os.Create(filepath.Join(*work, "tgtd.log"))
	defer logf.Close()
	d, err := tgt.Start(ctx, tgt.Options{Log: logf})
	if err != nil {
		return err
	}
	defer d.Stop()
	iqn := "iqn.2025-01.org.xedge.bench:lun"
	if err := d.AddTarget(1, iqn, map[int]string{1: lun}); err != nil {
		return err
	}
	for _, k := range []string{"HeaderDigest", "DataDigest"} {
		if err := d.SetParam(1, k, "CRC32C,None"); err != nil {
			return err
		}
	}
	quiet := slog.New(slog.NewTextHandler(logf, nil))
	cfg := iscsi.Config{Portal: d.Portal, Target: iqn, LUN: 1, Logger: quiet}
	dev, err := iscsi.Dial(ctx, cfg)
	if err != nil {
		return err
	}
	defer dev.Close()

	rep := report{Date: time.Now().UTC().Format(time.RFC3339), Host: hostInfo(*work), Options: opts}

	// 1. 4 KiB durable writes: rounds of dd, the Go O_DSYNC loop and iSCSI in
	// turn on one region, so each sees the same background noise.
	lo := opts
	lo.Offset = latOff
	lo.Writes = max(1, opts.Writes / *rounds)
	var ddSec float64
	var local, remote, fdsync, nofua []time.Duration
	wbCfg := cfg
	wbCfg.WriteBack = true
	wbDev, err := iscsi.Dial(ctx, wbCfg)
	if err != nil {
		return err
	}
	defer wbDev.Close()
	for r := 0; r < *rounds; r++ {
		res, err := dd(lun, "4k", lo.Writes, latOff/4096)
		if err != nil {
			return err
		}
		ddSec += res.Seconds
		rep.DD4K.Command = res.Command
		s, err := localDsync(ctx, lun, size, lo)
		if err != nil {
			return err
		}
		local = append(local, s...)
		s, err = iscsibench.Samples4K(ctx, dev, lo)
		if err != nil {
			return err
		}
		remote = append(remote, s...)
		s, err = localFdatasync(ctx, lun, size, lo)
		if err != nil {
			return err
		}
		fdsync = append(fdsync, s...)
		s, err = iscsibench.Samples4K(ctx, noSync{wbDev}, lo)
		if err != nil {
			return err
		}
		nofua = append(nofua, s...)
	}
	rep.LocalFdatasync = iscsibench.Summarize(fdsync)
	rep.ISCSINoFUA = iscsibench.Summarize(nofua)
	rep.DD4K.Seconds = round2(ddSec)
	rep.DD4K.PerOpUS = round1(ddSec * 1e6 / float64(lo.Writes**rounds))
	rep.LocalDsync = iscsibench.Summarize(local)
	lat := iscsibench.Summarize(remote)

	// 2. Sequential: dd bs=1M oflag=dsync, then iSCSI, on one region.
	so := opts
	so.Offset = seqOff
	rep.DDSeq, err = dd(lun, "1M", int(opts.SeqBytes>>20), seqOff>>20)
	if err != nil {
		return err
	}
	rep.DDSeq.MiBps = round1(float64(opts.SeqBytes>>20) / rep.DDSeq.Seconds)
	seq, err := iscsibench.Sequential(ctx, dev, so)
	if err != nil {
		return err
	}
	seq.Write4K = lat
	rep.ISCSI = seq
	rep.Stats = dev.Stats()

	if *crc {
		ccfg := cfg
		ccfg.HeaderDigest, ccfg.DataDigest = true, true
		cdev, err := iscsi.Dial(ctx, ccfg)
		if err != nil {
			return err
		}
		r, err := iscsibench.Run(ctx, cdev, so)
		cdev.Close()
		if err != nil {
			return err
		}
		// Run timed its 4 KiB writes in the sequential region: same disk, same state.
		rep.ISCSICRC = &r
	}

	// 3. QD1 4 KiB reads: ours, then libiscsi's iscsi-perf for 4 s.
	var rs []time.Duration
	rbuf := make([]byte, 4096)
	for i := 0; i < 5000; i++ {
		t0 := time.Now()
		if _, err := dev.ReadAt(rbuf, seqOff+int64(i%4096)*4096); err != nil {
			return err
		}
		rs = append(rs, time.Since(t0))
	}
	rep.ReadQD1 = iscsibench.Summarize(rs)
	rep.ReadQD1IOPS = round1(1e6 / rep.ReadQD1.Mean)
	rep.LibiscsiIOPS = libiscsiPerf("iscsi://" + d.Portal + "/" + iqn + "/1")

	rep.RatioP50DD = round2(rep.ISCSI.Write4K.P50 / rep.DD4K.PerOpUS)
	rep.RatioLocal = round2(rep.ISCSI.Write4K.P50 / rep.LocalDsync.P50)
	rep.TargetMet = rep.RatioP50DD <= 2

	fmt.Println()
	fmt.Printf("%-22s 4 KiB dsync write:   mean %7.1f µs (%s)\n", "dd", rep.DD4K.PerOpUS, rep.DD4K.Command)
	fmt.Printf("%-22s 4 KiB O_DSYNC write: p50 %7.1f µs  p99 %7.1f µs\n", "local Go loop", rep.LocalDsync.P50, rep.LocalDsync.P99)
	fmt.Printf("%-22s 4 KiB write+fdatasync: p50 %7.1f µs  p99 %7.1f µs\n", "local Go loop", rep.LocalFdatasync.P50, rep.LocalFdatasync.P99)
	fmt.Printf("%-22s 4 KiB write, no FUA: p50 %7.1f µs  p99 %7.1f µs (not durable)\n", "iSCSI", rep.ISCSINoFUA.P50, rep.ISCSINoFUA.P99)
	iscsibench.Print(os.Stdout, "iSCSI (FUA)", rep.ISCSI)
	if rep.ISCSICRC != nil {
		iscsibench.Print(os.Stdout, "iSCSI (FUA, CRC32C)", *rep.ISCSICRC)
	}
	fmt.Printf("%-22s 4 KiB read, QD1:     p50 %7.1f µs  mean %7.1f µs = %.0f IOPS; libiscsi iscsi-perf: %.0f IOPS\n",
		"iSCSI", rep.ReadQD1.P50, rep.ReadQD1.Mean, rep.ReadQD1IOPS, rep.LibiscsiIOPS)
	fmt.Printf("%-22s sequential write:    %7.1f MiB/s (%s)\n", "dd", rep.DDSeq.MiBps, rep.DDSeq.Command)
	fmt.Printf("\niSCSI p50 / dd per-write = %.2f (target <= 2): %v; iSCSI p50 / local O_DSYNC p50 = %.2f\n",
		rep.RatioP50DD, map[bool]string{true: "met", false: "NOT met"}[rep.TargetMet], rep.RatioLocal)

	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	name := filepath.Join(*out, time.Now().UTC().Format("2006-01-02T150405Z")+".json")
	if err := os.WriteFile(name, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Println("wrote", name)
	return nil
}

func sh(name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

var ddSeconds = regexp.MustCompile(`copied, ([0-9.e+-]+) s`)

// dd writes count blocks of bs at block seek of the file with O_DSYNC.
func dd(file, bs string, count int, seek int64) (ddResult, error) {
	args := []string{"if=/dev/zero", "of=" + file, "bs=" + bs, "count=" + strconv.Itoa(count),
		"seek=" + strconv.FormatInt(seek, 10), "oflag=dsync", "conv=notrunc"}
	r := ddResult{Command: "dd " + strings.Join(args, " ")}
	start := time.Now()
	out, err := exec.Command("dd", args...).CombinedOutput()
	if err != nil {
		return r, fmt.Errorf("%s: %w: %s", r.Command, err, out)
	}
	r.Seconds = time.Since(start).Seconds()
	if m := ddSeconds.FindSubmatch(out); m != nil {
		if s, err := strconv.ParseFloat(string(m[1]), 64); err == nil && s > 0 {
			r.Seconds = s
		}
	}
	return r, nil
}

// dsyncFile is the backing file opened O_DSYNC, as a benchmark device.
type dsyncFile struct {
	f    *os.File
	size int64
}

func (d dsyncFile) WriteAt(p []byte, off int64) (int, error) { return d.f.WriteAt(p, off) }
func (d dsyncFile) Sync() error                              { return nil }
func (d dsyncFile) Size() int64                              { return d.size }
func (d dsyncFile) BlockSize() int                           { return 512 }

func localDsync(ctx context.Context, file string, size int64, o iscsibench.Options) ([]time.Duration, error) {
	f, err := os.OpenFile(file, os.O_WRONLY|syscall.O_DSYNC, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return iscsibench.Samples4K(ctx, dsyncFile{f, size}, o)
}

var iopsAverage = regexp.MustCompile(`iops average ([0-9]+)`)

// libiscsiPerf runs iscsi-perf (8-block reads, one in flight) for 4 s and
// returns its last average IOPS, or 0 if it is not installed.
func libiscsiPerf(url string) float64 {
	if _, err := exec.LookPath("iscsi-perf"); err != nil {
		return 0
	}
	out, _ := exec.Command("timeout", "-s", "INT", "4", "iscsi-perf", "-b", "8", "-m", "1", url).CombinedOutput()
	m := iopsAverage.FindAllSubmatch(out, -1)
	if len(m) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[len(m)-1][1]), 64)
	return v
}

// fdatasyncFile writes then fdatasyncs, as tgtd's rdwr backing store does for FUA.
type fdatasyncFile struct{ dsyncFile }

func (d fdatasyncFile) Sync() error { return syscall.Fdatasync(int(d.f.Fd())) }

func localFdatasync(ctx context.Context, file string, size int64, o iscsibench.Options) ([]time.Duration, error) {
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return iscsibench.Samples4K(ctx, fdatasyncFile{dsyncFile{f, size}}, o)
}

// noSync hides a write-back device's Sync: its writes are timed alone.
type noSync struct{ *iscsi.Device }

func (noSync) Sync() error { return nil }

func hostInfo(dir string) map[string]string {
	h := map[string]string{"cpus": strconv.Itoa(runtime.NumCPU()), "go": runtime.Version()}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		var b []byte
		for _, c := range u.Release {
			if c == 0 {
				break
			}
			b = append(b, byte(c))
		}
		h["kernel"] = string(b)
	}
	if out, err := exec.Command("df", "-T", dir).Output(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if f := strings.Fields(lines[len(lines)-1]); len(f) > 1 {
			h["filesystem"] = f[1]
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		h["loadavg_at_start"] = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", "tgt").Output(); err == nil {
		h["tgt"] = string(out)
	}
	return h
}

func round1(x float64) float64 { return math.Round(x*10) / 10 }
func round2(x float64) float64 { return math.Round(x*100) / 100 }
