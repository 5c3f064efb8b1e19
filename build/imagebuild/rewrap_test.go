package imagebuild

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeBzImage is a file with an x86 setup header naming payload as its payload.
func fakeBzImage(setupSects byte, payload []byte, initSize uint32) []byte {
	sects := int(setupSects)
	if sects == 0 {
		sects = 4
	}
	b := make([]byte, (sects+1)*512+64)
	b[0x1f1] = setupSects
	copy(b[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(b[0x206:], 0x20f)
	binary.LittleEndian.PutUint32(b[0x248:], 64) // payload_offset, from the protected-mode code
	binary.LittleEndian.PutUint32(b[0x24c:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[0x260:], initSize)
	return append(b, payload...)
}

func TestParseBzImage(t *testing.T) {
	payload := append([]byte{0xFD, '7', 'z', 'X', 'Z', 0x00}, "rest of the stream+size"...)
	h, err := ParseBzImage(fakeBzImage(39, payload, 0x3f98000))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h.Payload, payload) || h.PayloadOffset != 40*512+64 || h.Version != 0x20f || h.InitSize != 0x3f98000 {
		t.Fatalf("parsed %+v", h)
	}
	if k := payloadKind(h.Payload); k != "xz" {
		t.Fatalf("payload kind %q, want xz", k)
	}
	if k := payloadKind(append(append([]byte{}, lz4LegacyMagic...), 1, 2, 3)); k != "lz4" {
		t.Fatalf("payload kind %q, want lz4", k)
	}
	// setup_sects 0 means 4 (boot protocol).
	if h, err := ParseBzImage(fakeBzImage(0, payload, 1)); err != nil || h.PayloadOffset != 5*512+64 {
		t.Fatalf("setup_sects 0: %+v %v", h, err)
	}
	bad := fakeBzImage(39, payload, 1)
	binary.LittleEndian.PutUint32(bad[0x24c:], 1<<30)
	if _, err := ParseBzImage(bad); err == nil {
		t.Fatal("a payload beyond the file parsed")
	}
	if _, err := ParseBzImage(make([]byte, 4096)); err == nil {
		t.Fatal("a file without HdrS parsed")
	}
}

// elfWithSections is a minimal ELF64 with the named NOBITS/PROGBITS sections at
// the given addresses and sizes (what VOffsets reads).
func elfWithSections(secs []struct {
	name       string
	addr, size uint64
}) []byte {
	shstr := []byte{0}
	names := []uint32{}
	for _, s := range secs {
		names = append(names, uint32(len(shstr)))
		shstr = append(shstr, s.name...)
		shstr = append(shstr, 0)
	}
	shstrName := uint32(len(shstr))
	shstr = append(shstr, ".shstrtab\x00"...)
	const ehsize, shentsize = 64, 64
	shstrOff := uint64(ehsize)
	shoff := (shstrOff + uint64(len(shstr)) + 7) &^ 7
	n := len(secs) + 2 // null, sections, shstrtab
	b := make([]byte, shoff+uint64(n*shentsize))
	copy(b, "\x7fELF")
	b[4], b[5], b[6] = 2, 1, 1 // 64-bit, little-endian, version
	le := binary.LittleEndian
	le.PutUint16(b[16:], 2)  // ET_EXEC
	le.PutUint16(b[18:], 62) // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[40:], shoff)
	le.PutUint16(b[52:], ehsize)
	le.PutUint16(b[58:], shentsize)
	le.PutUint16(b[60:], uint16(n))
	le.PutUint16(b[62:], uint16(n-1))
	copy(b[shstrOff:], shstr)
	for i, s := range secs {
		sh := b[shoff+uint64((i+1)*shentsize):]
		le.PutUint32(sh[0:], names[i])
		le.PutUint32(sh[4:], 8) // SHT_NOBITS: no file bytes needed
		le.PutUint64(sh[16:], s.addr)
		le.PutUint64(sh[32:], s.size)
	}
	sh := b[shoff+uint64((n-1)*shentsize):]
	le.PutUint32(sh[0:], shstrName)
	le.PutUint32(sh[4:], 3) // SHT_STRTAB
	le.PutUint64(sh[24:], shstrOff)
	le.PutUint64(sh[32:], uint64(len(shstr)))
	return b
}

// TestVOffsets: the symbols come from the section layout of
// arch/x86/kernel/vmlinux.lds.S, with Debian 6.1.0-57's figures; the size pair
// is the one found in Debian's own bzImage (0x3430000 total, 0x1000000 text).
func TestVOffsets(t *testing.T) {
	secs := []struct {
		name       string
		addr, size uint64
	}{
		{".text", 0xffffffff81000000, 0xe01d32},
		{".rodata", 0xffffffff82000000, 0x45e616},
		{".bss", 0xffffffff83310000, 0x10f0000},
		{".brk", 0xffffffff84400000, 0x2f001}, // _end rounds up to the page
	}
	v, err := VOffsets(elfWithSections(secs))
	if err != nil {
		t.Fatal(err)
	}
	want := VO{Text: 0xffffffff81000000, StartRodata: 0xffffffff82000000, BssStart: 0xffffffff83310000, End: 0xffffffff84430000}
	if v != want {
		t.Fatalf("VOffsets %+v, want %+v", v, want)
	}
	pair := []byte{0, 0, 0x43, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}
	if !bytes.Equal(v.sizePair(), pair) {
		t.Fatalf("size pair % x, want % x", v.sizePair(), pair)
	}
	if _, err := VOffsets(elfWithSections(secs[:3])); err == nil || !strings.Contains(err.Error(), ".brk") {
		t.Fatalf("an ELF without .brk: %v", err)
	}
	if _, err := VOffsets([]byte("not an elf")); err == nil {
		t.Fatal("garbage parsed as ELF")
	}
}

func TestKernelVersions(t *testing.T) {
	if v := configVersion("#\n# Automatically generated file; DO NOT EDIT.\n# Linux/x86 6.1.192 Kernel Configuration\n#\n"); v != "6.1.192" {
		t.Fatalf("config version %q", v)
	}
	dir := t.TempDir()
	mk := "# SPDX-License-Identifier: GPL-2.0\nVERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\nEXTRAVERSION =\nNAME = Curry Ramen\n"
	if err := os.WriteFile(filepath.Join(dir, "Makefile"), []byte(mk), 0o644); err != nil {
		t.Fatal(err)
	}
	if v, err := sourceVersion(dir); err != nil || v != "6.1.192" {
		t.Fatalf("source version %q %v", v, err)
	}
}

// TestStubMakefile: the goal exists only in kbuild's final make, and builds the
// generated files the stub includes before the stub itself.
func TestStubMakefile(t *testing.T) {
	if !strings.HasPrefix(strings.SplitN(stubMakefile, "\n", 3)[1], "ifeq ($(sub_make_done),1)") {
		t.Fatalf("the goal must be guarded by sub_make_done:\n%s", stubMakefile)
	}
	order := []string{"capflags.c", "inat-tables.c", "utsversion.h", "libstub/lib.a", "arch/x86/boot/bzImage"}
	last := -1
	for _, s := range order {
		i := strings.Index(stubMakefile, s)
		if i <= last {
			t.Fatalf("%s missing or out of order in the stub makefile", s)
		}
		last = i
	}
	for _, l := range strings.Split(stubMakefile, "\n") {
		if strings.HasPrefix(l, "\t") != strings.HasPrefix(l, "\t$(Q)") {
			t.Fatalf("recipe line without a tab or $(Q): %q", l)
		}
	}
}
