// Package pxe is xedge's network boot server: DHCP (a full server, or ProxyDHCP
// beside a site's existing DHCP server) that recognises PXE firmware and iPXE,
// router advertisements so iPXE's IPv6 autoconfiguration does not stall the boot,
// HTTP for the kernel, the initramfs, an iPXE boot script and each box's xedge
// parameters (domain, cluster key, seeds), and TFTP for legacy PXE firmware that
// must fetch iPXE first.
//
// A box needs no configuration of its own: the boot script puts
// xedge.boot=<this server's URL> on the kernel command line, and the box's init
// fetches its parameters from <URL>params at boot. The server hands every box the
// same site parameters; the seeds are the boxes it has already booted.
//
// It runs on a host (`xedge pxe`) and on a node (kernel parameter xedge.pxe=on), so
// it must not import build/ or init/; it owns no XMPP or cluster logic.
package pxe
