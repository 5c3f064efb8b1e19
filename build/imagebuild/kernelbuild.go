package imagebuild

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
	"golang.org/x/sys/unix"
)

// KernelBuild builds the appliance's own kernel from Debian's linux-source
// package: `make tinyconfig`, then the Kconfig fragment image/kernel.config (every
// driver the image needs built in, an LZ4 payload), then bzImage. The result —
// bzImage for PXE boots and the PVH vmlinux for direct boots — is kept in a cache
// directory under a key of the source tarball, the fragment and the compiler, so a
// second build with the same inputs does nothing, and a changed fragment builds
// again (incrementally, in the same object tree).
//
// Build gets the kernel the image then uses instead of Debian's (Options.Kernel
// empty and such a kernel cached); without one the image keeps Debian's kernel.
type KernelBuild struct {
	// Source is a linux-source tarball (default: the newest
	// /usr/src/linux-source-*.tar.xz, from Debian's linux-source package).
	Source string
	// Fragment is the Kconfig fragment (default: <Repo>/image/kernel.config).
	Fragment string
	// Repo is the module root, for the default Fragment.
	Repo string
	// Cache is the cache directory (default: DefaultCache()).
	Cache string
	// Jobs is make's -j (default: the number of CPUs); Nice the niceness of the
	// compilers (default 19: the build shares the machine).
	Jobs, Nice int
	Log        io.Writer
}

// CustomKernel is a kernel KernelBuild built: files in one cache directory.
type CustomKernel struct {
	Dir     string
	Release string // uname -r of the kernel
	BzImage string
	Vmlinux string // uncompressed ELF with the PVH entry note
	Config  string // the final .config
	// Builtin is modules.builtin (the drivers compiled in), for u-root's module
	// prober in init: a request for one of them is then already satisfied.
	Builtin string
	Took    time.Duration // how long the build took (0 if unknown)
}

// kernelBuildRev changes when the way the kernel is built changes, so that a
// cached kernel of an older recipe is not used.
const kernelBuildRev = "1"

// DefaultCache is where built kernels are kept: $XEDGE_CACHE, else
// /var/cache/xedge (outside the checkout: a fresh clone reuses it).
func DefaultCache() string {
	if d := os.Getenv("XEDGE_CACHE"); d != "" {
		return d
	}
	return "/var/cache/xedge"
}

func (b *KernelBuild) defaults() error {
	if b.Repo == "" {
		b.Repo = "."
	}
	if b.Fragment == "" {
		b.Fragment = filepath.Join(b.Repo, "image", "kernel.config")
	}
	if b.Cache == "" {
		b.Cache = DefaultCache()
	}
	if b.Jobs <= 0 {
		b.Jobs = runtime.NumCPU()
	}
	if b.Nice == 0 {
		b.Nice = 19
	}
	if b.Source == "" {
		srcs, _ := filepath.Glob("/usr/src/linux-source-*.tar.xz")
		if len(srcs) == 0 {
			return errors.New("no /usr/src/linux-source-*.tar.xz: install Debian's linux-source package (build/setup.sh kernel)")
		}
		sort.Strings(srcs)
		b.Source = srcs[len(srcs)-1]
	}
	return nil
}

func (b *KernelBuild) logf(format string, args ...any) { logTo(b.Log, format, args...) }

// logTo writes one line to w, if there is a w.
func logTo(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

// Key names the cached kernel of these inputs: the source tarball (name, size,
// time), the fragment's text, the C compiler's version and the recipe.
func (b *KernelBuild) Key() (string, error) {
	if err := b.defaults(); err != nil {
		return "", err
	}
	frag, err := os.ReadFile(b.Fragment)
	if err != nil {
		return "", fmt.Errorf("kernel fragment: %w", err)
	}
	fi, err := os.Stat(b.Source)
	if err != nil {
		return "", fmt.Errorf("kernel source: %w", err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "rev %s\nsource %s %d %d\ncc %s\n", kernelBuildRev, filepath.Base(b.Source), fi.Size(), fi.ModTime().Unix(), ccVersion())
	h.Write(frag)
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// Cached returns the kernel built for the current inputs, if there is one.
func (b *KernelBuild) Cached() (CustomKernel, bool) {
	key, err := b.Key()
	if err != nil {
		return CustomKernel{}, false
	}
	return readCustomKernel(filepath.Join(b.Cache, "kernel", key))
}

func readCustomKernel(dir string) (CustomKernel, bool) {
	k := CustomKernel{Dir: dir, BzImage: filepath.Join(dir, "bzImage"), Vmlinux: filepath.Join(dir, "vmlinux"),
		Config: filepath.Join(dir, "config"), Builtin: filepath.Join(dir, "modules.builtin")}
	rel, err := os.ReadFile(filepath.Join(dir, "release"))
	if err != nil {
		return k, false
	}
	k.Release = strings.TrimSpace(string(rel))
	for _, f := range []string{k.BzImage, k.Vmlinux, k.Builtin} {
		if _, err := os.Stat(f); err != nil {
			return k, false
		}
	}
	if t, err := os.ReadFile(filepath.Join(dir, "took")); err == nil {
		if s, err := strconv.ParseFloat(strings.TrimSpace(string(t)), 64); err == nil {
			k.Took = time.Duration(s * float64(time.Second))
		}
	}
	return k, k.Release != ""
}

// Build returns the cached kernel of the current inputs, building it first when
// there is none. Two builds at once wait for each other (a lock file).
func (b *KernelBuild) Build(ctx context.Context) (CustomKernel, error) {
	key, err := b.Key()
	if err != nil {
		return CustomKernel{}, err
	}
	root := filepath.Join(b.Cache, "kernel")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return CustomKernel{}, fmt.Errorf("kernel cache: %w", err)
	}
	lock, err := lockFile(filepath.Join(root, "lock"))
	if err != nil {
		return CustomKernel{}, err
	}
	defer lock.Close()
	dir := filepath.Join(root, key)
	if k, ok := readCustomKernel(dir); ok {
		b.logf("kernel %s: cached in %s", k.Release, dir)
		return k, nil
	}
	start := time.Now()
	src, err := b.extract(ctx, root)
	if err != nil {
		return CustomKernel{}, err
	}
	obj := filepath.Join(root, "obj")
	if err := os.MkdirAll(obj, 0o755); err != nil {
		return CustomKernel{}, err
	}
	frag, err := os.ReadFile(b.Fragment)
	if err != nil {
		return CustomKernel{}, fmt.Errorf("kernel fragment: %w", err)
	}
	want, err := ParseKconfig(string(frag))
	if err != nil {
		return CustomKernel{}, fmt.Errorf("%s: %w", b.Fragment, err)
	}
	// A fresh .config from tinyconfig each time: the object tree is reused
	// (make rebuilds only what the changed options touch), the configuration
	// never carries over.
	if err := b.make(ctx, src, obj, "tinyconfig"); err != nil {
		return CustomKernel{}, err
	}
	cfgPath := filepath.Join(obj, ".config")
	base, err := os.ReadFile(cfgPath)
	if err != nil {
		return CustomKernel{}, fmt.Errorf("tinyconfig: %w", err)
	}
	if err := os.WriteFile(cfgPath, []byte(MergeKconfig(string(base), want)), 0o644); err != nil {
		return CustomKernel{}, err
	}
	if err := b.make(ctx, src, obj, "olddefconfig"); err != nil {
		return CustomKernel{}, err
	}
	final, err := os.ReadFile(cfgPath)
	if err != nil {
		return CustomKernel{}, err
	}
	if miss := CheckKconfig(string(final), want); len(miss) > 0 {
		return CustomKernel{}, fmt.Errorf("the kernel's configuration does not have what %s asks (dependencies not met or no such option): %s",
			b.Fragment, strings.Join(miss, ", "))
	}
	b.logf("kernel: building bzImage in %s (make -j%d at nice %d; a first build takes 15-40 min on 2 busy cores, a changed fragment rebuilds what its options touch)", obj, b.Jobs, b.Nice)
	if err := b.make(ctx, src, obj, "bzImage"); err != nil {
		return CustomKernel{}, err
	}
	rel, err := os.ReadFile(filepath.Join(obj, "include", "config", "kernel.release"))
	if err != nil {
		return CustomKernel{}, fmt.Errorf("kernel release: %w", err)
	}
	tmp, err := os.MkdirTemp(root, "new-")
	if err != nil {
		return CustomKernel{}, err
	}
	defer os.RemoveAll(tmp)
	copies := map[string]string{
		filepath.Join(obj, "arch", "x86", "boot", "bzImage"): "bzImage",
		filepath.Join(obj, "vmlinux"):                        "vmlinux",
		cfgPath:                                              "config",
	}
	for from, to := range copies {
		if err := copyFile(from, filepath.Join(tmp, to)); err != nil {
			return CustomKernel{}, err
		}
	}
	if !isPVHELF(mustRead(filepath.Join(tmp, "vmlinux"))) {
		return CustomKernel{}, errors.New("the built vmlinux has no PVH entry note (CONFIG_PVH)")
	}
	builtin, err := os.ReadFile(filepath.Join(obj, "modules.builtin"))
	if err != nil {
		// Kbuild writes modules.builtin only with CONFIG_MODULES; what init's
		// prober needs is the names of the drivers compiled in.
		builtin = []byte(builtinFromModinfo(filepath.Join(obj, "modules.builtin.modinfo")))
	}
	took := time.Since(start)
	files := map[string]string{
		"modules.builtin": string(builtin),
		"release":         strings.TrimSpace(string(rel)) + "\n",
		"took":            fmt.Sprintf("%.1f\n", took.Seconds()),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(tmp, name), []byte(body), 0o644); err != nil {
			return CustomKernel{}, err
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil { // MkdirTemp's 0700: others build images too
		return CustomKernel{}, err
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return CustomKernel{}, fmt.Errorf("kernel cache: %w", err)
	}
	k, ok := readCustomKernel(dir)
	if !ok {
		return CustomKernel{}, fmt.Errorf("kernel cache %s incomplete after the build", dir)
	}
	b.logf("kernel %s built in %s: %s", k.Release, took.Round(time.Second), dir)
	return k, nil
}

func mustRead(p string) []byte {
	b, _ := os.ReadFile(p)
	return b
}

// extract unpacks the source tarball once into root/src/<name>.
func (b *KernelBuild) extract(ctx context.Context, root string) (string, error) {
	return extractSource(ctx, b.Source, root, b.Nice, b.logf)
}

// extractSource unpacks a linux-source tarball once into root/src/<name>
// (shared by KernelBuild and Rewrap; a lock file keeps two from unpacking it at
// once). The tree is only read: builds write into their own O= directories.
func extractSource(ctx context.Context, source, root string, nice int, logf func(string, ...any)) (string, error) {
	name := strings.TrimSuffix(filepath.Base(source), ".tar.xz")
	dst := filepath.Join(root, "src", name)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	lock, err := lockFile(dst + ".lock")
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if _, err := os.Stat(filepath.Join(dst, ".xedge-extracted")); err == nil {
		return dst, nil
	}
	logf("kernel: unpacking %s", source)
	tmp := dst + ".tmp"
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "nice", "-n", strconv.Itoa(nice), "tar", "-xf", source, "-C", tmp, "--strip-components=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("unpack %s: %w: %s", source, err, out)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".xedge-extracted"), nil, 0o644); err != nil {
		return "", err
	}
	_ = os.RemoveAll(dst)
	if err := os.Rename(tmp, dst); err != nil {
		return "", err
	}
	return dst, nil
}

func (b *KernelBuild) make(ctx context.Context, src, obj, target string) error {
	return kbuild(ctx, kbuildRun{Src: src, Obj: obj, LogDir: filepath.Join(obj, ".."), Nice: b.Nice, Jobs: b.Jobs,
		Host: "xedge", Goal: target, Hint: "install build-essential flex bison bc libelf-dev libssl-dev: build/setup.sh kernel"})
}

// kbuildRun is one make in a kernel source tree.
type kbuildRun struct {
	Src, Obj   string // source tree, object tree (O=)
	LogDir     string // the output goes to LogDir/make-<Goal>.log
	Nice, Jobs int
	Host       string   // KBUILD_BUILD_HOST (shown in the kernel's version string)
	Makefiles  string   // GNU make's MAKEFILES: extra makefiles every make reads
	Goal       string   // the make goal
	Vars       []string // more NAME=value arguments
	Hint       string   // said with an error
}

// kbuild runs make for r. Flags and the jobserver of a make that runs us (make
// test) are not handed on.
func kbuild(ctx context.Context, r kbuildRun) error {
	args := []string{"-n", strconv.Itoa(r.Nice), "make", "-C", r.Src, "O=" + r.Obj, "-j" + strconv.Itoa(r.Jobs),
		"LOCALVERSION=", "KBUILD_BUILD_USER=xedge", "KBUILD_BUILD_HOST=" + r.Host}
	args = append(append(args, r.Vars...), r.Goal)
	cmd := exec.CommandContext(ctx, "nice", args...)
	for _, e := range os.Environ() {
		if k, _, _ := strings.Cut(e, "="); k != "MAKEFLAGS" && k != "MFLAGS" && k != "MAKELEVEL" && k != "MAKEFILES" {
			cmd.Env = append(cmd.Env, e)
		}
	}
	if r.Makefiles != "" {
		cmd.Env = append(cmd.Env, "MAKEFILES="+r.Makefiles)
	}
	logf, err := os.Create(filepath.Join(r.LogDir, "make-"+r.Goal+".log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		tail, _ := os.ReadFile(logf.Name())
		if len(tail) > 3000 {
			tail = tail[len(tail)-3000:]
		}
		return fmt.Errorf("make %s: %w (%s)\n%s", r.Goal, err, r.Hint, tail)
	}
	return nil
}

// lockFile takes an exclusive flock on path (created if missing); closing the
// file releases it.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// ccVersion is the first line of gcc --version (part of the cache keys).
func ccVersion() string {
	out, _ := exec.Command("gcc", "--version").Output()
	cc, _, _ := strings.Cut(string(out), "\n")
	return cc
}

// ParseKconfig reads a Kconfig fragment: CONFIG_X=value lines, and "# CONFIG_X
// is not set" or CONFIG_X=n for an option that must be off. Other comments and
// blank lines are skipped.
func ParseKconfig(text string) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if name, ok := strings.CutPrefix(line, "# CONFIG_"); ok && strings.HasSuffix(name, " is not set") {
			out["CONFIG_"+strings.TrimSuffix(name, " is not set")] = "n"
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !strings.HasPrefix(k, "CONFIG_") || v == "" {
			return nil, fmt.Errorf("line %d: not CONFIG_X=value: %q", n, line)
		}
		out[k] = v
	}
	return out, sc.Err()
}

// MergeKconfig sets the options of want in a .config's text: existing lines are
// replaced, the others appended; "n" is written as "# CONFIG_X is not set".
func MergeKconfig(config string, want map[string]string) string {
	line := func(k, v string) string {
		if v == "n" {
			return "# " + k + " is not set"
		}
		return k + "=" + v
	}
	seen := map[string]bool{}
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(config, "\n"), "\n") {
		k := kconfigName(l)
		if v, ok := want[k]; ok && k != "" {
			seen[k] = true
			l = line(k, v)
		}
		b.WriteString(l + "\n")
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		if !seen[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteString(line(k, want[k]) + "\n")
	}
	return b.String()
}

// kconfigName is the option a .config line sets ("" for other lines).
func kconfigName(l string) string {
	if name, ok := strings.CutPrefix(l, "# "); ok && strings.HasSuffix(name, " is not set") {
		return strings.TrimSuffix(name, " is not set")
	}
	if k, _, ok := strings.Cut(l, "="); ok && strings.HasPrefix(k, "CONFIG_") {
		return k
	}
	return ""
}

// CheckKconfig lists the options of want that the final .config does not have
// as asked (an option whose dependencies are not met is dropped by olddefconfig
// without a word; an option that does not exist in this kernel likewise).
func CheckKconfig(config string, want map[string]string) []string {
	have := map[string]string{}
	for _, l := range strings.Split(config, "\n") {
		if k := kconfigName(l); k != "" {
			_, v, _ := strings.Cut(l, "=")
			if strings.HasPrefix(l, "# ") {
				v = "n"
			}
			have[k] = v
		}
	}
	var miss []string
	for k, v := range want {
		got, ok := have[k]
		if !ok {
			got = "n"
		}
		if got != v {
			miss = append(miss, fmt.Sprintf("%s=%s (got %s)", k, v, got))
		}
	}
	sort.Strings(miss)
	return miss
}

// builtinFromModinfo turns modules.builtin.modinfo (NUL-separated
// "module.key=value" records) into modules.builtin lines ("kernel/NAME.ko"):
// u-root's prober matches on the module's name only.
func builtinFromModinfo(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	set := map[string]bool{}
	for _, rec := range strings.Split(string(b), "\x00") {
		if mod, _, ok := strings.Cut(rec, "."); ok && mod != "" && !strings.ContainsAny(mod, "/ =") {
			set[mod] = true
		}
	}
	names := make([]string, 0, len(set))
	for m := range set {
		names = append(names, "kernel/"+m+".ko")
	}
	sort.Strings(names)
	return strings.Join(names, "\n") + "\n"
}

// chooseKernel applies Options.Kernel (see there).
func (o *Options) chooseKernel() (Kernel, error) {
	want := o.Kernel
	if want == "" {
		want = os.Getenv("XEDGE_KERNEL")
	}
	if want == "" || want == "own" {
		kb := KernelBuild{Repo: o.Repo, Cache: o.KernelCache, Source: o.KernelSource}
		if ck, ok := kb.Cached(); ok {
			return Kernel{Version: ck.Release, Image: ck.BzImage, Own: &ck}, nil
		}
		if want == "own" {
			return Kernel{}, errors.New("the appliance's own kernel is not built for the current image/kernel.config: run `xedge kernel` first")
		}
		o.logf("kernel: the appliance's own kernel is not built (`xedge kernel`); using Debian's")
	}
	if want == "own" || want == "debian" {
		want = ""
	}
	return FindKernel(want)
}

// addBuiltinOnly gives init's module prober an empty module tree for the own
// kernel: no module to load, and modules.builtin saying which drivers are there
// already (a request for "button" or "evdev" is then satisfied).
func addBuiltinOnly(files *tree, k Kernel) error {
	builtin, err := os.ReadFile(k.Own.Builtin)
	if err != nil {
		return fmt.Errorf("own kernel: %w", err)
	}
	base := "lib/modules/" + k.Version
	files.add(cpio.StaticFile(base+"/modules.dep", "", 0o644))
	files.add(cpio.StaticFile(base+"/modules.alias", "", 0o644))
	files.add(cpio.StaticFile(base+"/modules.builtin", string(builtin), 0o644))
	return nil
}
