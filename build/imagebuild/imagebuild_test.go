package imagebuild

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"
)

func TestTreeWritesParentsFirst(t *testing.T) {
	tr := newTree()
	tr.add(cpio.StaticFile("usr/sbin/iptables-x", "ELF", 0o755))
	tr.add(cpio.Symlink("sbin/modprobe", "/init"))
	tr.add(cpio.StaticFile("init", "init-binary", 0o755))
	tr.add(cpio.CharDev("dev/console", 0o600, 5, 1))
	var buf bytes.Buffer
	if err := tr.write(&buf); err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(buf.Bytes())))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	byName := map[string]cpio.Record{}
	for _, r := range recs {
		names = append(names, r.Name)
		byName[r.Name] = r
	}
	want := []string{"dev", "dev/console", "init", "sbin", "sbin/modprobe", "usr", "usr/sbin", "usr/sbin/iptables-x"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("names %v", names)
	}
	if r := byName["usr/sbin"]; r.Mode != cpio.S_IFDIR|0o755 {
		t.Errorf("dir mode %o", r.Mode)
	}
	if r := byName["dev/console"]; r.Mode&cpio.S_IFMT != cpio.S_IFCHR || r.Rmajor != 5 || r.Rminor != 1 {
		t.Errorf("console %v", r.Info)
	}
	b, _ := io.ReadAll(io.NewSectionReader(byName["init"], 0, int64(byName["init"].FileSize)))
	if string(b) != "init-binary" || byName["init"].Mode != cpio.S_IFREG|0o755 {
		t.Errorf("init %q %o", b, byName["init"].Mode)
	}
	if byName["init"].MTime != 0 || byName["init"].UID != 0 {
		t.Errorf("not reproducible: %v", byName["init"].Info)
	}
}

func TestModuleClosure(t *testing.T) {
	dir := t.TempDir()
	dep := `kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko
kernel/net/core/failover.ko:
kernel/net/netfilter/nf_tables.ko: kernel/lib/libcrc32c.ko
kernel/net/netfilter/ipvs/ip_vs.ko: kernel/net/netfilter/nf_conntrack.ko
kernel/net/netfilter/nf_conntrack.ko:
kernel/lib/libcrc32c.ko:
kernel/sound/snd.ko:
`
	os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644)
	os.WriteFile(filepath.Join(dir, "modules.alias"), []byte("alias virtio:d00000001v* virtio_net\nalias pci:v*d*sv*sd*bc04* snd\nalias nft-set nf_tables\n"), 0o644)
	mt, err := ReadModTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	paths, missing := mt.Closure([]string{"virtio-net", "virtio_pci", "af_packet"}, []string{"kernel/net/netfilter"}, []string{"kernel/net/netfilter/ipvs"})
	want := []string{
		"kernel/drivers/net/virtio_net.ko", "kernel/drivers/virtio/virtio.ko", "kernel/drivers/virtio/virtio_pci.ko",
		"kernel/drivers/virtio/virtio_ring.ko", "kernel/lib/libcrc32c.ko", "kernel/net/core/failover.ko",
		"kernel/net/netfilter/nf_conntrack.ko", "kernel/net/netfilter/nf_tables.ko",
	}
	if !reflect.DeepEqual(paths, want) {
		t.Fatalf("closure\n got %v\nwant %v", paths, want)
	}
	if !reflect.DeepEqual(missing, []string{"af_packet"}) {
		t.Fatalf("missing %v", missing)
	}
	depFile := mt.DepFile(paths)
	if !strings.Contains(depFile, "kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n") || strings.Contains(depFile, "snd") {
		t.Fatalf("dep file %q", depFile)
	}
	aliases, err := FilterAliases(filepath.Join(dir, "modules.alias"), paths)
	if err != nil {
		t.Fatal(err)
	}
	if aliases != "alias virtio:d00000001v* virtio_net\nalias nft-set nf_tables\n" {
		t.Fatalf("aliases %q", aliases)
	}
}

func note(name string, typ uint32, desc []byte) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint32(len(name)+1))
	binary.Write(&b, binary.LittleEndian, uint32(len(desc)))
	binary.Write(&b, binary.LittleEndian, typ)
	n := append([]byte(name), 0)
	for len(n)%4 != 0 {
		n = append(n, 0)
	}
	b.Write(n)
	for len(desc)%4 != 0 {
		desc = append(desc, 0)
	}
	b.Write(desc)
	return b.Bytes()
}

func TestHasNote(t *testing.T) {
	data := append(note("GNU", 3, []byte{1, 2, 3, 4, 5}), note("Xen", 18, []byte{0, 0, 0, 1})...)
	if !hasNote(data, "Xen", 18) {
		t.Error("PVH note not found")
	}
	if hasNote(data, "Xen", 17) || hasNote(data[:20], "Xen", 18) {
		t.Error("false positive")
	}
}

func TestLibraries(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh to inspect")
	}
	libs, err := Libraries([]string{"/bin/sh"})
	if err != nil {
		t.Fatal(err)
	}
	var libc bool
	for _, l := range libs {
		if strings.Contains(l, "libc.so") {
			libc = true
		}
		if !strings.HasPrefix(l, "/") {
			t.Errorf("relative %q", l)
		}
	}
	if !libc {
		t.Errorf("libc not among %v", libs)
	}
}

func TestModName(t *testing.T) {
	for in, want := range map[string]string{"kernel/net/8021q/8021q.ko": "8021q", "a/virtio-rng.ko.xz": "virtio_rng"} {
		if got := ModName(in); got != want {
			t.Errorf("%s: %s", in, got)
		}
	}
}
