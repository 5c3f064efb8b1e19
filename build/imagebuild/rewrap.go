package imagebuild

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Rewrap gives an installed Debian kernel a bzImage whose payload is LZ4 instead
// of xz, without building the kernel: the payload of Debian's bzImage (vmlinux
// stripped, plus its relocation table) is decompressed and wrapped again by the
// x86 boot stub (arch/x86/boot, arch/x86/boot/compressed and the EFI stub's
// library) compiled from Debian's linux-source of the same version with
// Debian's own configuration, CONFIG_KERNEL_LZ4 instead of CONFIG_KERNEL_XZ.
// The kernel that runs is byte for byte Debian's (Build checks that the new
// payload decompresses to the old one); only the code that unpacks it differs.
//
// Why: iPXE can only load a bzImage, and under TCG Debian's xz payload costs
// ~3 CPU-s of self-decompression before the kernel's clock starts, per box. An
// LZ4 payload is larger to download but unpacks several times faster.
//
// The result is kept in the cache (DefaultCache()/rewrap/<key>) under a key of the
// bzImage, its configuration, the source tarball, the compiler and the recipe;
// the stub's object tree (rewrap/obj) is reused, so a new Debian kernel of the
// same source rebuilds only what changed.
type Rewrap struct {
	Image  string // Debian's bzImage (/boot/vmlinuz-<ver>)
	Config string // its configuration (default: /boot/config-<ver> beside Image)
	// Source is a linux-source tarball (default: the newest
	// /usr/src/linux-source-*.tar.xz); its version must be the kernel's.
	Source string
	Cache  string // default DefaultCache()
	// Jobs is make's -j (default: the number of CPUs); Nice the niceness of the
	// compilers (default 0: the stub is small and on the image build's path).
	Jobs, Nice int
	Log        io.Writer
}

// rewrapRev changes when the way the stub is built changes.
const rewrapRev = "1"

// ErrRewrapUnavailable is returned (wrapped) when what the rewrap needs is not
// installed: the caller may keep Debian's own bzImage.
var ErrRewrapUnavailable = errors.New("kernel rewrap unavailable")

func (r *Rewrap) defaults() error {
	if r.Image == "" {
		return errors.New("rewrap: no bzImage given")
	}
	if r.Config == "" {
		r.Config = filepath.Join(filepath.Dir(r.Image), "config-"+strings.TrimPrefix(filepath.Base(r.Image), "vmlinuz-"))
	}
	if r.Cache == "" {
		r.Cache = DefaultCache()
	}
	if r.Jobs <= 0 {
		r.Jobs = runtime.NumCPU()
	}
	if r.Source == "" {
		srcs, _ := filepath.Glob("/usr/src/linux-source-*.tar.xz")
		if len(srcs) == 0 {
			return fmt.Errorf("%w: no /usr/src/linux-source-*.tar.xz (build/setup.sh test installs linux-source-6.1)", ErrRewrapUnavailable)
		}
		sort.Strings(srcs)
		r.Source = srcs[len(srcs)-1]
	}
	if _, err := os.Stat(r.Config); err != nil {
		return fmt.Errorf("%w: the kernel's configuration: %v", ErrRewrapUnavailable, err)
	}
	for _, tool := range []string{"make", "gcc", "as", "lz4", "bison", "flex", "bc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%w: %s is not installed (build/setup.sh test installs it)", ErrRewrapUnavailable, tool)
		}
	}
	return nil
}

func (r *Rewrap) logf(format string, args ...any) { logTo(r.Log, format, args...) }

// Key names the rewrapped bzImage of these inputs.
func (r *Rewrap) Key() (string, error) {
	if err := r.defaults(); err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "rev %s\n", rewrapRev)
	for _, p := range []string{r.Image, r.Config} {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d %x\n", filepath.Base(p), len(b), sha256.Sum256(b))
	}
	fi, err := os.Stat(r.Source)
	if err != nil {
		return "", fmt.Errorf("kernel source: %w", err)
	}
	fmt.Fprintf(h, "source %s %d %d\ncc %s\n", filepath.Base(r.Source), fi.Size(), fi.ModTime().Unix(), ccVersion())
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// Cached returns the rewrapped bzImage of the current inputs, if it is built.
func (r *Rewrap) Cached() (string, bool) {
	key, err := r.Key()
	if err != nil {
		return "", false
	}
	p := filepath.Join(r.Cache, "rewrap", key, "bzImage")
	_, err = os.Stat(p)
	return p, err == nil
}

// Build returns the rewrapped bzImage, building it first when the cache has none.
func (r *Rewrap) Build(ctx context.Context) (string, error) {
	key, err := r.Key()
	if err != nil {
		return "", err
	}
	root := filepath.Join(r.Cache, "rewrap")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("rewrap cache: %w", err)
	}
	lock, err := lockFile(filepath.Join(root, "lock"))
	if err != nil {
		return "", err
	}
	defer lock.Close()
	dir := filepath.Join(root, key)
	out := filepath.Join(dir, "bzImage")
	if _, err := os.Stat(out); err == nil {
		r.logf("kernel rewrap: cached %s", out)
		return out, nil
	}
	start := time.Now()

	old, err := os.ReadFile(r.Image)
	if err != nil {
		return "", fmt.Errorf("read kernel: %w", err)
	}
	hdr, err := ParseBzImage(old)
	if err != nil {
		return "", fmt.Errorf("%s: %w", r.Image, err)
	}
	comp := payloadKind(hdr.Payload)
	var tool []string
	for _, p := range payloads {
		if p.name == comp {
			tool = p.cmd
		}
	}
	if tool == nil {
		return "", fmt.Errorf("%s: payload is %s, not one this rewrap unpacks (xz, zstd, gzip)", r.Image, comp)
	}
	all, err := decompress(tool, hdr.Payload)
	if err != nil {
		return "", fmt.Errorf("%s: unpack payload: %w", r.Image, err)
	}
	if want := binary.LittleEndian.Uint32(hdr.Payload[len(hdr.Payload)-4:]); int(want) != len(all) {
		return "", fmt.Errorf("%s: payload unpacks to %d bytes, its size field says %d", r.Image, len(all), want)
	}
	vo, err := VOffsets(all)
	if err != nil {
		return "", fmt.Errorf("%s: %w", r.Image, err)
	}
	// The stub's decompressor keeps the kernel's text and total size (from
	// these symbols) as constants; Debian's does too. Finding them side by side
	// in Debian's bzImage confirms the symbols were read right.
	if !bytes.Contains(old, vo.sizePair()) {
		return "", fmt.Errorf("%s: the kernel's size from its sections (text %#x, total %#x) is not the one its own boot stub holds: layout not understood", r.Image, vo.textSize(), vo.totalSize())
	}

	cfg, err := os.ReadFile(r.Config)
	if err != nil {
		return "", err
	}
	kver := configVersion(string(cfg))
	src, err := extractSource(ctx, r.Source, filepath.Join(r.Cache, "kernel"), r.Nice, r.logf)
	if err != nil {
		return "", err
	}
	sver, err := sourceVersion(src)
	if err != nil {
		return "", err
	}
	if kver == "" || kver != sver {
		return "", fmt.Errorf("%w: the kernel is %q (%s) and the source %s is %s: install the linux-source package of the kernel's version (build/setup.sh test)",
			ErrRewrapUnavailable, kver, r.Config, r.Source, sver)
	}

	obj := filepath.Join(root, "obj")
	if err := os.MkdirAll(obj, 0o755); err != nil {
		return "", err
	}
	want := map[string]string{"CONFIG_KERNEL_LZ4": "y"}
	for _, c := range []string{"GZIP", "BZIP2", "LZMA", "XZ", "LZO", "ZSTD"} {
		want["CONFIG_KERNEL_"+c] = "n"
	}
	if err := os.WriteFile(filepath.Join(obj, ".config"), []byte(MergeKconfig(string(cfg), want)), 0o644); err != nil {
		return "", err
	}
	r.logf("kernel rewrap: configuring the boot stub of %s (Debian's configuration, LZ4 payload) in %s", sver, obj)
	if err := r.make(ctx, src, obj, root, "", "olddefconfig"); err != nil {
		return "", err
	}
	final, err := os.ReadFile(filepath.Join(obj, ".config"))
	if err != nil {
		return "", err
	}
	if miss := CheckKconfig(string(final), want); len(miss) > 0 {
		return "", fmt.Errorf("rewrap: the stub's configuration lacks %s", strings.Join(miss, ", "))
	}
	// kbuild's voffset.h comes from `nm vmlinux`: Debian ships no symbols, so
	// vmlinux here is an object holding just the four the stub reads.
	if err := assembleSymbols(ctx, vo, filepath.Join(obj, "vmlinux")); err != nil {
		return "", err
	}
	payload := filepath.Join(obj, "xedge-vmlinux.bin.all")
	if err := os.WriteFile(payload, all, 0o644); err != nil {
		return "", err
	}
	mk := filepath.Join(root, "xedge-stub.mk")
	if err := os.WriteFile(mk, []byte(stubMakefile), 0o644); err != nil {
		return "", err
	}
	r.logf("kernel rewrap: building the boot stub (make -j%d)", r.Jobs)
	if err := r.make(ctx, src, obj, root, mk, "xedge-bzimage", "vmlinux.bin.all-y="+payload); err != nil {
		return "", err
	}
	built, err := os.ReadFile(filepath.Join(obj, "arch", "x86", "boot", "bzImage"))
	if err != nil {
		return "", err
	}
	if err := checkRewrapped(built, all, vo); err != nil {
		return "", fmt.Errorf("rewrap: the new bzImage: %w", err)
	}
	tmp, err := os.MkdirTemp(root, "new-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	took := time.Since(start)
	info := fmt.Sprintf("from %s (%s payload, %d bytes)\nsource %s\nbzImage %d bytes (LZ4)\ntook %.1f\n", r.Image, comp, len(old), r.Source, len(built), took.Seconds())
	if err := os.WriteFile(filepath.Join(tmp, "bzImage"), built, 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(tmp, "info"), []byte(info), 0o644); err != nil {
		return "", err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return "", fmt.Errorf("rewrap cache: %w", err)
	}
	_ = os.Remove(payload) // 60+ MiB; the next build writes it again
	r.logf("kernel rewrap: %s (%.1f MiB, was %.1f MiB %s) in %s", out, float64(len(built))/(1<<20), float64(len(old))/(1<<20), comp, took.Round(time.Second))
	return out, nil
}

// stubMakefile is read by every make of the stub's kbuild run (GNU make's
// MAKEFILES): it adds one goal to kbuild's final top-level make (the one that has
// exported sub_make_done), which builds the boot stub and nothing of the kernel
// itself: the generated files the stub includes, the EFI stub's library, then
// arch/x86/boot/bzImage around the payload given as vmlinux.bin.all-y.
const stubMakefile = `# written by xedge (build/imagebuild/rewrap.go)
ifeq ($(sub_make_done),1)
.PHONY: xedge-bzimage
xedge-bzimage: prepare
	$(Q)$(MAKE) $(build)=arch/x86/kernel/cpu arch/x86/kernel/cpu/capflags.c
	$(Q)$(MAKE) $(build)=arch/x86/lib arch/x86/lib/inat-tables.c
	$(Q)$(MAKE) $(build)=init include/generated/utsversion.h
	$(Q)$(if $(CONFIG_EFI_STUB),$(MAKE) $(build)=drivers/firmware/efi/libstub drivers/firmware/efi/libstub/lib.a)
	$(Q)$(MAKE) $(build)=arch/x86/boot arch/x86/boot/bzImage
endif
`

func (r *Rewrap) make(ctx context.Context, src, obj, root, makefiles, goal string, vars ...string) error {
	return kbuild(ctx, kbuildRun{Src: src, Obj: obj, LogDir: root, Nice: r.Nice, Jobs: r.Jobs, Host: "lz4-rewrap",
		Makefiles: makefiles, Goal: goal, Vars: vars, Hint: "build/setup.sh test installs linux-source-6.1, gcc, make, flex, bison, bc, libelf-dev, libssl-dev, lz4"})
}

// BzImage is what ParseBzImage reads of an x86 boot image's setup header.
type BzImage struct {
	Version  uint16 // boot protocol
	InitSize uint32 // memory the kernel needs while it decompresses itself
	// Payload is the compressed kernel (with the 4-byte size kbuild appends).
	Payload []byte
	// PayloadOffset is where the payload starts in the file.
	PayloadOffset int
}

// ParseBzImage reads the setup header of a bzImage (boot protocol 2.08 and later
// name their payload).
func ParseBzImage(b []byte) (BzImage, error) {
	if len(b) < 0x270 || string(b[0x202:0x206]) != "HdrS" {
		return BzImage{}, errors.New("not a bzImage (no HdrS setup header)")
	}
	h := BzImage{Version: binary.LittleEndian.Uint16(b[0x206:]), InitSize: binary.LittleEndian.Uint32(b[0x260:])}
	if h.Version < 0x208 {
		return h, fmt.Errorf("boot protocol %#x: no payload fields", h.Version)
	}
	setupSects := int(b[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	off := (setupSects+1)*512 + int(binary.LittleEndian.Uint32(b[0x248:]))
	n := int(binary.LittleEndian.Uint32(b[0x24c:]))
	if n < 8 || off+n > len(b) {
		return h, fmt.Errorf("payload %d+%d outside the %d-byte file", off, n, len(b))
	}
	h.Payload, h.PayloadOffset = b[off:off+n], off
	return h, nil
}

// payloadKind names a payload's compression by its magic.
func payloadKind(p []byte) string {
	for _, c := range payloads {
		if bytes.HasPrefix(p, c.magic) {
			return c.name
		}
	}
	if bytes.HasPrefix(p, lz4LegacyMagic) {
		return "lz4"
	}
	return "unknown"
}

var lz4LegacyMagic = []byte{0x02, 0x21, 0x4c, 0x18}

// VO holds the kernel symbols the boot stub is built with (arch/x86/boot's
// voffset.h): where the kernel's text, read-only data and bss start, and its end.
type VO struct{ Text, StartRodata, BssStart, End uint64 }

func (v VO) textSize() uint64  { return v.StartRodata - v.Text }
func (v VO) totalSize() uint64 { return v.End - v.Text }

// sizePair is how misc.c's kernel_total_size and kernel_text_size sit in the
// stub's data: two little-endian longs, total first.
func (v VO) sizePair() []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint64(b, v.totalSize())
	binary.LittleEndian.PutUint64(b[8:], v.textSize())
	return b
}

// VOffsets reads those symbols from the stripped vmlinux a bzImage carries, by
// arch/x86/kernel/vmlinux.lds.S: _text opens .text, __start_rodata opens
// .rodata, __bss_start opens .bss, and _end is the end of .brk rounded up to a page.
func VOffsets(vmlinux []byte) (VO, error) {
	f, err := elf.NewFile(bytes.NewReader(vmlinux))
	if err != nil {
		return VO{}, fmt.Errorf("payload is not an ELF: %w", err)
	}
	sec := func(name string) (*elf.Section, error) {
		if s := f.Section(name); s != nil {
			return s, nil
		}
		return nil, fmt.Errorf("payload ELF has no %s section", name)
	}
	var v VO
	for name, dst := range map[string]*uint64{".text": &v.Text, ".rodata": &v.StartRodata, ".bss": &v.BssStart} {
		s, err := sec(name)
		if err != nil {
			return v, err
		}
		*dst = s.Addr
	}
	brk, err := sec(".brk")
	if err != nil {
		return v, err
	}
	v.End = (brk.Addr + brk.Size + 4095) &^ 4095
	if !(v.Text < v.StartRodata && v.StartRodata < v.BssStart && v.BssStart < v.End) {
		return v, fmt.Errorf("kernel sections out of order: %+v", v)
	}
	return v, nil
}

// assembleSymbols writes an object file holding the symbols as absolute ones.
func assembleSymbols(ctx context.Context, v VO, dst string) error {
	asm := fmt.Sprintf(".globl _text, __start_rodata, __bss_start, _end\n.set _text, %#x\n.set __start_rodata, %#x\n.set __bss_start, %#x\n.set _end, %#x\n",
		v.Text, v.StartRodata, v.BssStart, v.End)
	cmd := exec.CommandContext(ctx, "as", "--64", "-o", dst, "-")
	cmd.Stdin = strings.NewReader(asm)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("rewrap: as: %w: %s", err, out)
	}
	return nil
}

// checkRewrapped: the new image is a bzImage with an LZ4 payload that unpacks to
// exactly Debian's payload, with room for the kernel, and the stub knows its size.
func checkRewrapped(b, all []byte, vo VO) error {
	h, err := ParseBzImage(b)
	if err != nil {
		return err
	}
	if k := payloadKind(h.Payload); k != "lz4" {
		return fmt.Errorf("payload is %s, not lz4", k)
	}
	got, err := decompress([]string{"lz4", "-dc"}, h.Payload)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, all) {
		return fmt.Errorf("its payload unpacks to %d bytes that are not Debian's %d", len(got), len(all))
	}
	if uint64(h.InitSize) < vo.totalSize() {
		return fmt.Errorf("init_size %#x below the kernel's %#x", h.InitSize, vo.totalSize())
	}
	if !bytes.Contains(b, vo.sizePair()) {
		return errors.New("the stub does not hold the kernel's size")
	}
	return nil
}

var configVersionRe = regexp.MustCompile(`(?m)^# Linux/\S+ (\S+) Kernel Configuration`)

// configVersion is the kernel version a .config was made for ("6.1.192").
func configVersion(cfg string) string {
	if m := configVersionRe.FindStringSubmatch(cfg); m != nil {
		return m[1]
	}
	return ""
}

// sourceVersion reads VERSION.PATCHLEVEL.SUBLEVEL from a kernel tree's Makefile.
func sourceVersion(src string) (string, error) {
	b, err := os.ReadFile(filepath.Join(src, "Makefile"))
	if err != nil {
		return "", fmt.Errorf("kernel source: %w", err)
	}
	v := map[string]string{}
	for _, l := range strings.SplitN(string(b), "\n", 12) {
		if k, val, ok := strings.Cut(l, "="); ok {
			v[strings.TrimSpace(k)] = strings.TrimSpace(val)
		}
	}
	if v["VERSION"] == "" || v["PATCHLEVEL"] == "" {
		return "", fmt.Errorf("kernel source %s: no VERSION/PATCHLEVEL in its Makefile", src)
	}
	s := v["VERSION"] + "." + v["PATCHLEVEL"]
	if v["SUBLEVEL"] != "" {
		s += "." + v["SUBLEVEL"]
	}
	return s + v["EXTRAVERSION"], nil
}
