package imagebuild

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/pierrec/lz4/v4"
)

func TestKconfigMergeAndCheck(t *testing.T) {
	want, err := ParseKconfig("# comment\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=n\nCONFIG_D=\"x\"\nCONFIG_E=y\n")
	if err != nil {
		t.Fatal(err)
	}
	if exp := map[string]string{"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": "n", "CONFIG_D": `"x"`, "CONFIG_E": "y"}; !reflect.DeepEqual(want, exp) {
		t.Fatalf("parsed %v, want %v", want, exp)
	}
	base := "# CONFIG_A is not set\nCONFIG_B=y\nCONFIG_Z=y\n# CONFIG_C is not set\n"
	merged := MergeKconfig(base, want)
	exp := "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_Z=y\n# CONFIG_C is not set\nCONFIG_D=\"x\"\nCONFIG_E=y\n"
	if merged != exp {
		t.Fatalf("merged:\n%s\nwant:\n%s", merged, exp)
	}
	if miss := CheckKconfig(merged, want); len(miss) != 0 {
		t.Fatalf("merged config misses %v", miss)
	}
	// What olddefconfig does to an option whose dependencies are not met: it
	// drops it. The check must say so.
	dropped := strings.Replace(merged, "CONFIG_E=y\n", "", 1)
	dropped = strings.Replace(dropped, "# CONFIG_B is not set\n", "CONFIG_B=y\n", 1)
	if miss := CheckKconfig(dropped, want); !reflect.DeepEqual(miss, []string{"CONFIG_B=n (got y)", "CONFIG_E=y (got n)"}) {
		t.Fatalf("check of a config with dropped options: %v", miss)
	}
	if _, err := ParseKconfig("CONFIG_A\n"); err == nil {
		t.Fatal("a line without a value parsed")
	}
}

// TestImageKernelFragment: the image's fragment parses and asks for what the
// boot paths depend on (PVH entry for direct boots, an LZ4 payload, no modules,
// the NIC and console drivers built in).
func TestImageKernelFragment(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "image", "kernel.config"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := ParseKconfig(string(b))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"CONFIG_PVH": "y", "CONFIG_KERNEL_LZ4": "y", "CONFIG_MODULES": "n", "CONFIG_VIRTIO_NET": "y",
		"CONFIG_SERIAL_8250_CONSOLE": "y", "CONFIG_BLK_DEV_INITRD": "y", "CONFIG_RD_ZSTD": "y",
		"CONFIG_NFT_COMPAT": "y", "CONFIG_PACKET": "y", "CONFIG_ACPI_BUTTON": "y", "CONFIG_INPUT_EVDEV": "y",
		// Without it the CRNG is not seeded at boot and Go's crypto/rand blocks:
		// the first build of the own kernel got no DHCP lease in the lab.
		"CONFIG_RANDOM_TRUST_CPU": "y", "CONFIG_PRINTK_TIME": "y",
	} {
		if want[k] != v {
			t.Errorf("image/kernel.config: %s=%q, want %s", k, want[k], v)
		}
	}
}

func TestBuiltinFromModinfo(t *testing.T) {
	p := filepath.Join(t.TempDir(), "modules.builtin.modinfo")
	rec := "button.license=GPL\x00button.description=ACPI Button Driver\x00evdev.license=GPL\x00virtio_net.alias=virtio:d00000001v*\x00"
	if err := os.WriteFile(p, []byte(rec), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := builtinFromModinfo(p); got != "kernel/button.ko\nkernel/evdev.ko\nkernel/virtio_net.ko\n" {
		t.Fatalf("modules.builtin from modinfo: %q", got)
	}
}

// TestKernelKeyFollowsFragment: a changed fragment is a different cached kernel.
func TestKernelKeyFollowsFragment(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "linux-source-0.0.tar.xz")
	frag := filepath.Join(dir, "kernel.config")
	for p, s := range map[string]string{src: "tarball", frag: "CONFIG_A=y\n"} {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	kb := KernelBuild{Source: src, Fragment: frag, Cache: dir}
	k1, err := kb.Key()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := kb.Cached(); ok {
		t.Fatal("an empty cache has a kernel")
	}
	if err := os.WriteFile(frag, []byte("CONFIG_A=y\nCONFIG_B=y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	k2, err := kb.Key()
	if err != nil {
		t.Fatal(err)
	}
	if k1 == k2 {
		t.Fatal("the key did not change with the fragment")
	}
}

// TestChooseKernel: "own" is the cached kernel of the current inputs or an
// error; the default takes it when cached and Debian's kernel otherwise (a clean
// checkout, CI); "debian" never takes it.
func TestChooseKernel(t *testing.T) {
	repo, cache := t.TempDir(), t.TempDir()
	src := filepath.Join(t.TempDir(), "linux-source-0.0.tar.xz")
	if err := os.MkdirAll(filepath.Join(repo, "image"), 0o755); err != nil {
		t.Fatal(err)
	}
	for p, s := range map[string]string{src: "tarball", filepath.Join(repo, "image", "kernel.config"): "CONFIG_A=y\n"} {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("XEDGE_KERNEL", "")
	o := Options{Repo: repo, KernelCache: cache, KernelSource: src, Kernel: "own"}
	if _, err := o.chooseKernel(); err == nil || !strings.Contains(err.Error(), "xedge kernel") {
		t.Fatalf("own kernel not built: %v", err)
	}
	_, debErr := FindKernel("")
	o.Kernel = ""
	if k, err := o.chooseKernel(); (err == nil) != (debErr == nil) || k.Own != nil {
		t.Fatalf("default without an own kernel: %+v, %v (Debian's: %v)", k, err, debErr)
	}
	// Put a built kernel of these inputs into the cache.
	key, err := (&KernelBuild{Repo: repo, Source: src, Cache: cache}).Key()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(cache, "kernel", key)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"release": "6.1.0-xedge\n", "bzImage": "bz", "vmlinux": "elf", "modules.builtin": "kernel/virtio_net.ko\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"", "own"} {
		o.Kernel = want
		k, err := o.chooseKernel()
		if err != nil || k.Own == nil || k.Version != "6.1.0-xedge" || k.Image != filepath.Join(dir, "bzImage") {
			t.Fatalf("Kernel %q with an own kernel built: %+v, %v", want, k, err)
		}
	}
	o.Kernel = "debian"
	if k, err := o.chooseKernel(); k.Own != nil || (err == nil) != (debErr == nil) {
		t.Fatalf("debian: %+v, %v", k, err)
	}
	// A changed fragment is another kernel: not built.
	if err := os.WriteFile(filepath.Join(repo, "image", "kernel.config"), []byte("CONFIG_A=y\nCONFIG_B=y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o.Kernel = "own"
	if _, err := o.chooseKernel(); err == nil {
		t.Fatal("own kernel of an older fragment taken")
	}
}

// TestLz4Initramfs: the PXE initramfs is LZ4's legacy frame (magic 0x184C2102, the
// format the kernel's initramfs unpacker reads) and decompresses to the archive.
func TestLz4Initramfs(t *testing.T) {
	in := []byte(strings.Repeat("070701 newc archive bytes ", 1<<18)) // ~6.5 MiB
	p := filepath.Join(t.TempDir(), "initramfs.cpio.lz4")
	if err := lz4File(in, p); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 4 || b[0] != 0x02 || b[1] != 0x21 || b[2] != 0x4c || b[3] != 0x18 {
		t.Fatalf("not an LZ4 legacy frame: % x", b[:min(len(b), 8)])
	}
	out, err := io.ReadAll(lz4.NewReader(bytes.NewReader(b)))
	if err != nil || !bytes.Equal(out, in) {
		t.Fatalf("round trip: %v (%d of %d bytes)", err, len(out), len(in))
	}
}
