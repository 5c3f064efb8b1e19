// Package imagebuild builds the appliance image on the host: it takes Debian's
// installed kernel (linux-image-amd64), extracts the uncompressed PVH-bootable vmlinux
// from the bzImage, builds init, xmppd and xmppctl, picks the kernel modules and host
// binaries listed by package image, and writes a newc cpio, plain and xz-compressed.
//
// It is host tooling: runtime code must not import it.
package imagebuild

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Kernel is an installed kernel: its bzImage and module tree; or the appliance's
// own kernel (Own set: no modules, every driver built in).
type Kernel struct {
	Version string
	Image   string // /boot/vmlinuz-<ver>, or the own kernel's bzImage
	Modules string // /lib/modules/<ver>; "" for the own kernel
	Own     *CustomKernel
	// Rewrapped, for a Debian kernel, is the same kernel in a bzImage with an
	// LZ4 payload (Rewrap): what out/vmlinuz and so PXE boots get. "" when the
	// rewrap could not be made (Debian's xz bzImage is used).
	Rewrapped string
}

// Payload says how out/vmlinuz's kernel is compressed, for reports.
func (k Kernel) Payload() string {
	switch {
	case k.Own != nil:
		return "lz4"
	case k.Rewrapped != "":
		return "lz4, rewrapped"
	}
	p, err := BzImagePayload(k.Image)
	if err != nil {
		return "?"
	}
	return p
}

// BzImagePayload names the compression of a bzImage's payload ("xz", "lz4", ...).
func BzImagePayload(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	h, err := ParseBzImage(b)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return payloadKind(h.Payload), nil
}

// FindKernel returns the newest kernel in /boot that has a module tree (or the one
// named by version).
func FindKernel(version string) (Kernel, error) {
	imgs, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Strings(imgs)
	for i := len(imgs) - 1; i >= 0; i-- {
		v := strings.TrimPrefix(filepath.Base(imgs[i]), "vmlinuz-")
		if version != "" && v != version {
			continue
		}
		mods := filepath.Join("/lib/modules", v)
		if _, err := os.Stat(filepath.Join(mods, "modules.dep")); err == nil {
			return Kernel{Version: v, Image: imgs[i], Modules: mods}, nil
		}
	}
	return Kernel{}, errors.New("no kernel with modules in /boot and /lib/modules: install linux-image-amd64 (build/setup.sh test)")
}

// compressed payload signatures, as the kernel's scripts/extract-vmlinux knows them.
var payloads = []struct {
	name  string
	magic []byte
	cmd   []string
}{
	{"xz", []byte{0xFD, '7', 'z', 'X', 'Z', 0x00}, []string{"xz", "-dc", "--single-stream"}},
	{"zstd", []byte{0x28, 0xB5, 0x2F, 0xFD}, []string{"zstd", "-dc"}},
	{"gzip", []byte{0x1F, 0x8B, 0x08}, []string{"gzip", "-dc"}},
}

// ExtractVmlinux finds the compressed kernel inside a bzImage, decompresses it with
// the matching host tool and checks that the result is an x86-64 ELF with a PVH entry
// note (XEN_ELFNOTE_PHYS32_ENTRY), so that qemu -kernel can boot it directly.
func ExtractVmlinux(bzImage string) ([]byte, string, error) {
	b, err := os.ReadFile(bzImage)
	if err != nil {
		return nil, "", fmt.Errorf("read kernel: %w", err)
	}
	var tried []string
	for _, p := range payloads {
		for off, n := 0, 0; n < 8; n++ {
			i := bytes.Index(b[off:], p.magic)
			if i < 0 {
				break
			}
			off += i
			out, err := decompress(p.cmd, b[off:])
			if err == nil && isPVHELF(out) {
				return out, p.name, nil
			}
			tried = append(tried, fmt.Sprintf("%s at %d", p.name, off))
			off++
		}
	}
	return nil, "", fmt.Errorf("no PVH vmlinux found in %s (tried %s)", bzImage, strings.Join(tried, ", "))
}

func decompress(argv []string, in []byte) ([]byte, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = bytes.NewReader(in)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	// Trailing data after the stream makes some tools complain although the output is
	// complete; the ELF check decides.
	if out.Len() == 0 {
		return nil, fmt.Errorf("%s: %v: %s", argv[0], err, stderr.String())
	}
	return out.Bytes(), nil
}

// isPVHELF reports whether b is an x86-64 ELF with a Xen PHYS32_ENTRY note.
func isPVHELF(b []byte) bool {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil || f.Machine != elf.EM_X86_64 {
		return false
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			continue
		}
		if hasNote(data, "Xen", 18) {
			return true
		}
	}
	return false
}

// hasNote walks ELF notes looking for owner name and type.
func hasNote(data []byte, name string, typ uint32) bool {
	for i := 0; i < 1000 && len(data) >= 12; i++ {
		nsz := binary.LittleEndian.Uint32(data[0:4])
		dsz := binary.LittleEndian.Uint32(data[4:8])
		t := binary.LittleEndian.Uint32(data[8:12])
		nameEnd := 12 + int(align4(nsz))
		end := nameEnd + int(align4(dsz))
		if nameEnd > len(data) || end > len(data) {
			return false
		}
		n := strings.TrimRight(string(data[12:12+nsz]), "\x00")
		if n == name && t == typ {
			return true
		}
		data = data[end:]
	}
	return false
}

func align4(n uint32) uint32 { return (n + 3) &^ 3 }
