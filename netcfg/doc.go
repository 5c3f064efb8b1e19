// Package netcfg configures the node's network: the DHCP client (insomniacslk nclient4)
// and lease renewals; links, addresses and routes via netlink; the hostname (written
// to /proc/sys/kernel/hostname and /etc/hostname) and resolv.conf (a plain file
// written from the lease); the firewall via go-iptables; and the VIP mechanics
// (address add/remove, gratuitous ARP, unsolicited NA).
//
// It executes decisions and must not make them: who owns the VIP is decided by the
// cluster view in xmppd. It must not import xmppd or storage.
package netcfg
