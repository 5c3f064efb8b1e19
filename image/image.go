// Package image says what goes into the xedge appliance image: the kernel modules,
// the host binaries copied in with their shared libraries, and the default kernel
// command line. It is data; the builder in build/imagebuild acts on it.
//
// It must not import anything from xedge.
package image

// Modules are loaded on demand (by modalias match at boot, or by the kernel through
// /sbin/modprobe); the builder adds their dependencies from modules.dep. Names that
// are built into Debian's kernel (af_packet) are skipped.
var Modules = []string{
	// NICs qemu and common hardware present.
	"virtio_pci", "virtio_net", "virtio_rng", "e1000", "e1000e",
	// L2 features the lab and VIP work use.
	"af_packet", "bridge", "8021q", "veth", "macvlan",
	// sock_diag for TCP: the VIP holder lists its client connections (tickle
	// ACKs at takeover, docs/vip.md).
	"inet_diag", "tcp_diag",
	// ACPI power button and the input event interface: a power-off request from
	// the hypervisor or the real button becomes a clean poweroff.
	"button", "evdev",
	// libcrc32c (nf_tables, nf_conntrack) asks the crypto API for crc32c.
	"crc32c_generic", "crc32c_intel",
}

// BootModules are the modules init loads while booting (NIC drivers found by modalias
// on qemu and common hardware); they stay uncompressed in the image, the others are
// xz-compressed.
var BootModules = []string{"virtio_pci", "virtio_net", "virtio_rng", "e1000", "e1000e"}

// ModuleDirs are module directories included whole (relative to /lib/modules/<ver>),
// minus ModuleDirsExclude: netfilter for the firewall (iptables-nft needs nf_tables,
// nft_compat and the xt_* matches, which the kernel requests through modprobe).
var ModuleDirs = []string{
	"kernel/net/netfilter",
	"kernel/net/ipv4/netfilter",
	"kernel/net/ipv6/netfilter",
}

// ModuleDirsExclude are subtrees of ModuleDirs left out.
var ModuleDirsExclude = []string{"kernel/net/netfilter/ipvs"}

// HostBinaries are copied from the build host with the shared libraries ldd names.
// Each entry maps the path in the image to the host command it is resolved from
// (symlinks followed); Aliases become symlinks to it.
var HostBinaries = []HostBinary{
	{Host: "/usr/sbin/iptables", Aliases: []string{
		"iptables", "iptables-save", "iptables-restore",
		"ip6tables", "ip6tables-save", "ip6tables-restore",
	}},
}

// HostBinary is a binary copied from the build host into /usr/sbin.
type HostBinary struct {
	Host    string
	Aliases []string
}

// HostDirs are host directories of plugins copied whole, with their libraries.
var HostDirs = []string{"/usr/lib/x86_64-linux-gnu/xtables"}

// HostFiles are small host files copied as they are when present.
var HostFiles = []string{"/etc/protocols", "/etc/services", "/etc/ethertypes"}

// Cmdline is the default kernel command line of the image. quiet + loglevel=3 keep
// the serial console for xedge's own lines and the admin shell; panic=-1 reboots on
// a kernel panic at once.
const Cmdline = "console=ttyS0 quiet loglevel=3 panic=-1"
