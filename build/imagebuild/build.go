package imagebuild

import (
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"

	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/cpio"

	"xedge/image"
)

// Options says what to build and where.
type Options struct {
	Repo string // module root (where go.mod is)
	Out  string // output directory (out/)
	// Kernel chooses the kernel: "" = the appliance's own kernel when KernelBuild
	// has built it for the current image/kernel.config (see KernelCache), else the
	// newest installed Debian kernel; "own" = the own kernel or an error;
	// "debian" = the newest Debian kernel; anything else = that installed Debian
	// kernel version. The environment's XEDGE_KERNEL stands in for "".
	Kernel string
	// KernelCache is where KernelBuild keeps built kernels (default DefaultCache()),
	// KernelSource the linux-source tarball it was built from (default: the newest
	// installed); both only name the own kernel to look for.
	KernelCache, KernelSource string
	// NoRewrap keeps Debian's own (xz) bzImage as out/vmlinuz instead of the
	// same kernel rewrapped with an LZ4 payload (Rewrap). $XEDGE_REWRAP=off
	// does the same.
	NoRewrap bool
	Version  string // version stamped into init and xmppd; "" = git describe
	// Defaults are xedge.* parameters embedded as the image's defaults layer
	// (/etc/xedge/defaults), e.g. "xedge.domain=example.org".
	Defaults []string
	// Xmppd, when set, is a prebuilt binary used as /bin/xmppd instead of building
	// ./xmppd/cmd/xmppd (tests use a placeholder before xmppd exists).
	Xmppd string
	// NoXz skips the xz-compressed cpio (tests that only boot the plain one).
	NoXz bool
	Log  io.Writer
}

// Result lists the artefacts.
type Result struct {
	Kernel  Kernel
	Vmlinuz string
	Vmlinux string
	Cpio    string // uncompressed newc cpio
	CpioXz  string
	// CpioZst is the same archive zstd-compressed (the kernel unpacks zstd several
	// times faster than xz, which under TCG is seconds).
	CpioZst string
	// CpioLz4 is the same archive in LZ4's legacy frame (the kernel's initramfs
	// LZ4 format): what PXE boots get. Under TCG the kernel unpacks it in ~0.65
	// CPU-s less than the zstd one (40 MiB: 0.95-0.99 vs 1.61-1.66 qemu CPU-s to
	// init) for ~20% more to download.
	CpioLz4   string
	Files     int
	Modules   int
	HasXmppd  bool
	Sizes     map[string]int64
	Took      time.Duration
	Warnings  []string
	Cmdline   string
	Artefacts []string // in print order
}

func (o *Options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", args...)
	}
}

// Build builds the image into o.Out.
func Build(ctx context.Context, o Options) (Result, error) {
	start := time.Now()
	res := Result{Sizes: map[string]int64{}, Cmdline: image.Cmdline}
	if o.Repo == "" {
		o.Repo = "."
	}
	if o.Out == "" {
		o.Out = filepath.Join(o.Repo, "out")
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return res, fmt.Errorf("out dir: %w", err)
	}
	if o.Version == "" {
		o.Version = gitVersion(o.Repo)
	}
	k, err := o.chooseKernel()
	if err != nil {
		return res, err
	}
	res.Kernel = k
	if k.Own != nil {
		o.logf("kernel %s (own build, %s)", k.Version, k.Own.Dir)
	} else {
		o.logf("kernel %s (%s)", k.Version, k.Image)
	}

	// Kernel images.
	if k.Own == nil && !o.NoRewrap && os.Getenv("XEDGE_REWRAP") != "off" {
		rw := Rewrap{Image: k.Image, Cache: o.KernelCache, Source: o.KernelSource, Log: o.Log}
		p, err := rw.Build(ctx)
		switch {
		case errors.Is(err, ErrRewrapUnavailable):
			w := fmt.Sprintf("vmlinuz is Debian's own bzImage, which unpacks itself slowly under TCG (PXE boots): %v", err)
			o.logf("warning: %s", w)
			res.Warnings = append(res.Warnings, w)
		case err != nil:
			return res, err
		default:
			k.Rewrapped = p
			res.Kernel = k
		}
	}
	res.Vmlinuz = filepath.Join(o.Out, "vmlinuz")
	vmlinuz := k.Image
	if k.Rewrapped != "" {
		vmlinuz = k.Rewrapped
	}
	if err := copyFile(vmlinuz, res.Vmlinuz); err != nil {
		return res, err
	}
	res.Vmlinux = filepath.Join(o.Out, "vmlinux")
	if k.Own != nil {
		if err := copyFile(k.Own.Vmlinux, res.Vmlinux); err != nil {
			return res, err
		}
		if err := os.WriteFile(filepath.Join(o.Out, ".vmlinux-from"), []byte(k.Image), 0o644); err != nil {
			return res, err
		}
	} else if from := filepath.Join(o.Out, ".vmlinux-from"); !newer(res.Vmlinux, k.Image) || string(mustRead(from)) != k.Image {
		// Extracted again unless out/vmlinux came from this very bzImage (it may
		// be the own kernel's, newer than any Debian kernel).
		vmlinux, comp, err := ExtractVmlinux(k.Image)
		if err != nil {
			return res, err
		}
		if err := os.WriteFile(res.Vmlinux, vmlinux, 0o644); err != nil {
			return res, fmt.Errorf("write vmlinux: %w", err)
		}
		if err := os.WriteFile(from, []byte(k.Image), 0o644); err != nil {
			return res, err
		}
		o.logf("vmlinux extracted (%s payload, PVH entry present)", comp)
	}

	files := newTree()

	// Go binaries.
	bins, err := o.goBuild(ctx, &res)
	if err != nil {
		return res, err
	}
	for dst, src := range bins {
		if err := files.addHostFile(dst, src, 0o755); err != nil {
			return res, err
		}
	}
	files.add(cpio.Symlink("sbin/modprobe", "/init"))
	files.add(cpio.CharDev("dev/console", 0o600, 5, 1))
	files.add(cpio.CharDev("dev/null", 0o666, 1, 3))
	for _, d := range []string{"proc", "sys", "dev", "run", "tmp", "etc/xedge", "var/lib", "root"} {
		files.add(cpio.Directory(d, 0o755))
	}
	var defaults strings.Builder
	defaults.WriteString("# xedge image defaults (lowest-precedence configuration layer)\n")
	for _, d := range o.Defaults {
		if !strings.HasPrefix(d, "xedge.") {
			d = "xedge." + d
		}
		defaults.WriteString(d + "\n")
	}
	files.add(cpio.StaticFile("etc/xedge/defaults", defaults.String(), 0o644))
	files.add(cpio.StaticFile("etc/passwd", "root:x:0:0:root:/root:/bin/false\n", 0o644))
	files.add(cpio.StaticFile("etc/group", "root:x:0:\n", 0o644))
	files.add(cpio.StaticFile("etc/hosts", "127.0.0.1 localhost\n::1 localhost\n", 0o644))

	// Host binaries (iptables) and their libraries.
	if err := o.hostBinaries(files, &res); err != nil {
		return res, err
	}

	// Kernel modules.
	var n int
	if k.Own != nil {
		err = addBuiltinOnly(files, k)
	} else {
		n, err = addModules(ctx, files, k)
	}
	if err != nil {
		return res, err
	}
	res.Modules = n
	o.logf("%d kernel modules", n)

	// Archive.
	var buf bytes.Buffer
	if err := files.write(&buf); err != nil {
		return res, err
	}
	res.Files = len(files.recs)
	res.Cpio = filepath.Join(o.Out, "initramfs.cpio")
	if err := os.WriteFile(res.Cpio, buf.Bytes(), 0o644); err != nil {
		return res, fmt.Errorf("write cpio: %w", err)
	}
	res.Artefacts = []string{res.Vmlinuz, res.Vmlinux, res.Cpio}
	if !o.NoXz {
		res.CpioXz = filepath.Join(o.Out, "initramfs.cpio.xz")
		if err := xzFile(ctx, res.Cpio, res.CpioXz); err != nil {
			return res, err
		}
		res.Artefacts = append(res.Artefacts, res.CpioXz)
		res.CpioZst = filepath.Join(o.Out, "initramfs.cpio.zst")
		if err := zstdFile(buf.Bytes(), res.CpioZst); err != nil {
			return res, err
		}
		res.Artefacts = append(res.Artefacts, res.CpioZst)
		res.CpioLz4 = filepath.Join(o.Out, "initramfs.cpio.lz4")
		if err := lz4File(buf.Bytes(), res.CpioLz4); err != nil {
			return res, err
		}
		res.Artefacts = append(res.Artefacts, res.CpioLz4)
	}
	for _, a := range res.Artefacts {
		if fi, err := os.Stat(a); err == nil {
			res.Sizes[a] = fi.Size()
		}
	}
	if err := os.WriteFile(filepath.Join(o.Out, "cmdline"), []byte(image.Cmdline+"\n"), 0o644); err != nil {
		return res, fmt.Errorf("write cmdline: %w", err)
	}
	res.Took = time.Since(start)
	return res, nil
}

// MaxCompressed is the size target of initramfs.cpio.xz.
const MaxCompressed = 16 << 20

func (o *Options) goBuild(ctx context.Context, res *Result) (map[string]string, error) {
	dir := filepath.Join(o.Out, "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("mkdir: %w", err)
	}
	pkgs := map[string]string{"init": "./init/cmd/init", "bin/xmppctl": "./xmppd/cmd/xmppctl"}
	out := map[string]string{}
	if o.Xmppd != "" {
		out["bin/xmppd"] = o.Xmppd
		res.HasXmppd = true
	} else if m, _ := filepath.Glob(filepath.Join(o.Repo, "xmppd/cmd/xmppd/*.go")); len(m) > 0 {
		pkgs["bin/xmppd"] = "./xmppd/cmd/xmppd"
		res.HasXmppd = true
	} else {
		w := "xmppd/cmd/xmppd has no Go files yet: the image has no xmppd and boots into maintenance"
		res.Warnings = append(res.Warnings, w)
		o.logf("warning: %s", w)
	}
	ldflags := fmt.Sprintf("-s -w -X main.version=%s -X xedge/xmppd/version.Version=%s", o.Version, o.Version)
	for dst, pkg := range pkgs {
		bin := filepath.Join(dir, path.Base(dst))
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", bin, pkg)
		cmd.Dir = o.Repo
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
		}
		out[dst] = bin
	}
	return out, nil
}

func (o *Options) hostBinaries(files *tree, res *Result) error {
	var elfs []string
	for _, hb := range image.HostBinaries {
		real, err := filepath.EvalSymlinks(hb.Host)
		if err != nil {
			return fmt.Errorf("%s: %w (install iptables)", hb.Host, err)
		}
		dst := "usr/sbin/" + filepath.Base(real)
		if err := files.addHostFile(dst, real, 0o755); err != nil {
			return err
		}
		for _, a := range hb.Aliases {
			files.add(cpio.Symlink("usr/sbin/"+a, filepath.Base(real)))
		}
		elfs = append(elfs, real)
	}
	for _, d := range image.HostDirs {
		plugins, _ := filepath.Glob(filepath.Join(d, "*.so"))
		for _, p := range plugins {
			if err := files.addHostFile(strings.TrimPrefix(p, "/"), p, 0o644); err != nil {
				return err
			}
		}
		elfs = append(elfs, plugins...)
	}
	for _, f := range image.HostFiles {
		if _, err := os.Stat(f); err == nil {
			if err := files.addHostFile(strings.TrimPrefix(f, "/"), f, 0o644); err != nil {
				return err
			}
		}
	}
	libs, err := Libraries(elfs)
	if err != nil {
		return err
	}
	for _, l := range libs {
		if err := files.addHostFile(strings.TrimPrefix(l, "/"), l, 0o755); err != nil {
			return err
		}
	}
	// usr/sbin must be on PATH for go-iptables; /sbin and /bin are the image's.
	o.logf("host binaries: %d ELF files, %d libraries", len(elfs), len(libs))
	return nil
}

var lddPath = regexp.MustCompile(`(/[^ \t]+) \(0x`)

// Libraries returns the shared libraries (and the dynamic loader) the ELF files need,
// as ldd reports them, sorted and without duplicates.
func Libraries(elfs []string) ([]string, error) {
	if len(elfs) == 0 {
		return nil, nil
	}
	cmd := exec.Command("ldd", elfs...)
	out, err := cmd.Output()
	if err != nil && len(out) == 0 {
		return nil, fmt.Errorf("ldd: %w", err)
	}
	set := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if m := lddPath.FindStringSubmatch(line); m != nil {
			set[m[1]] = true
		}
	}
	var libs []string
	for l := range set {
		libs = append(libs, l)
	}
	sort.Strings(libs)
	return libs, nil
}

func addModules(ctx context.Context, files *tree, k Kernel) (int, error) {
	mt, err := ReadModTree(k.Modules)
	if err != nil {
		return 0, err
	}
	paths, _ := mt.Closure(image.Modules, image.ModuleDirs, image.ModuleDirsExclude)
	// Modules the boot itself loads stay plain (finit_module, no decompression in
	// PID 1); the rest are xz-compressed, which keeps the initramfs the kernel must
	// unpack small — u-root's kmodule decompresses them when the kernel asks.
	boot := map[string]bool{}
	bootPaths, _ := mt.Closure(image.BootModules, nil, nil)
	for _, p := range bootPaths {
		boot[p] = true
	}
	base := "lib/modules/" + k.Version
	rename := map[string]string{}
	type job struct{ src, dst string }
	var jobs []job
	for _, p := range paths {
		if boot[p] {
			if err := files.addHostFile(base+"/"+p, filepath.Join(k.Modules, p), 0o644); err != nil {
				return 0, err
			}
			continue
		}
		rename[p] = p + ".xz"
		jobs = append(jobs, job{filepath.Join(k.Modules, p), base + "/" + p + ".xz"})
	}
	out := make([][]byte, len(jobs))
	errs := make([]error, len(jobs))
	sem := make(chan struct{}, 2)
	done := make(chan struct{})
	for i, j := range jobs {
		go func() {
			sem <- struct{}{}
			defer func() { <-sem; done <- struct{}{} }()
			cmd := exec.CommandContext(ctx, "xz", "--check=crc32", "-9", "-c", j.src)
			out[i], errs[i] = cmd.Output()
		}()
	}
	for range jobs {
		<-done
	}
	for i, j := range jobs {
		if errs[i] != nil {
			return 0, fmt.Errorf("xz %s: %w", j.src, errs[i])
		}
		files.add(cpio.StaticRecord(out[i], cpio.Info{Name: j.dst, Mode: cpio.S_IFREG | 0o644}))
	}
	files.add(cpio.StaticFile(base+"/modules.dep", mt.DepFileRenamed(paths, rename), 0o644))
	aliases, err := FilterAliases(filepath.Join(k.Modules, "modules.alias"), paths)
	if err != nil {
		return 0, err
	}
	files.add(cpio.StaticFile(base+"/modules.alias", aliases, 0o644))
	if b, err := os.ReadFile(filepath.Join(k.Modules, "modules.builtin")); err == nil {
		files.add(cpio.StaticFile(base+"/modules.builtin", string(b), 0o644))
	}
	return len(paths), nil
}

// tree is the image's file set.
type tree struct{ recs map[string]cpio.Record }

func newTree() *tree { return &tree{recs: map[string]cpio.Record{}} }

func (t *tree) add(r cpio.Record) {
	r.Name = cpio.Normalize(r.Name)
	t.recs[r.Name] = r
}

func (t *tree) addHostFile(dst, src string, perm uint64) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("image file %s: %w", dst, err)
	}
	t.add(cpio.StaticRecord(b, cpio.Info{Name: dst, Mode: cpio.S_IFREG | perm}))
	return nil
}

// write emits a newc archive: parents before children, reproducible metadata.
func (t *tree) write(w io.Writer) error {
	for name := range t.recs {
		for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := t.recs[d]; !ok {
				t.recs[d] = cpio.Directory(d, 0o755)
			}
		}
	}
	names := make([]string, 0, len(t.recs))
	for n := range t.recs {
		names = append(names, n)
	}
	sort.Strings(names)
	rw := cpio.Newc.Writer(w)
	for i, n := range names {
		r := cpio.MakeReproducible(t.recs[n])
		r.Ino = uint64(i + 1)
		if err := rw.WriteRecord(r); err != nil {
			return fmt.Errorf("cpio %s: %w", n, err)
		}
	}
	if err := cpio.WriteTrailer(rw); err != nil {
		return fmt.Errorf("cpio trailer: %w", err)
	}
	return nil
}

func xzFile(ctx context.Context, src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	// The kernel's XZ decoder wants CRC32 (or no) checks.
	cmd := exec.CommandContext(ctx, "xz", "--check=crc32", "-6", "-T1", "-c")
	cmd.Stdin, cmd.Stdout = in, out
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("xz: %w: %s (install xz-utils)", err, stderr.String())
	}
	return out.Close()
}

// zstdFile writes b zstd-compressed (klauspost/compress, already in the module
// graph; no host tool needed). An 8 MiB window keeps the kernel's decoder small.
func zstdFile(b []byte, dst string) error {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithWindowSize(8<<20))
	if err != nil {
		return fmt.Errorf("zstd: %w", err)
	}
	out := enc.EncodeAll(b, make([]byte, 0, len(b)/3))
	enc.Close()
	if err := os.WriteFile(dst, out, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	return nil
}

// lz4File writes b in LZ4's legacy frame format, the one the kernel's initramfs
// unpacker reads (pierrec/lz4, already in the module graph; no host tool needed).
func lz4File(b []byte, dst string) error {
	var out bytes.Buffer
	w := lz4.NewWriter(&out)
	if err := w.Apply(lz4.LegacyOption(true), lz4.CompressionLevelOption(lz4.Level9)); err != nil {
		return fmt.Errorf("lz4: %w", err)
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("lz4: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("lz4: %w", err)
	}
	if err := os.WriteFile(dst, out.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	return nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read %s: %w", src, err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	return nil
}

func newer(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && fa.ModTime().After(fb.ModTime()) && fa.Size() > 0
}

func gitVersion(repo string) string {
	cmd := exec.Command("git", "describe", "--always", "--dirty")
	cmd.Dir = repo
	if b, err := cmd.Output(); err == nil {
		if v := strings.TrimSpace(string(b)); v != "" {
			return v
		}
	}
	return "dev"
}
