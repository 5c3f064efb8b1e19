// Package netcfg configures the node's network: the DHCP client (insomniacslk nclient4)
// and lease renewals; links, addresses and routes via netlink; the hostname (written
// to /proc/sys/kernel/hostname and /etc/hostname) and resolv.conf (a plain file
// written from the lease); the firewall via go-iptables (its own chains, reconciled
// idempotently); and the VIP mechanics (address add/remove with a kernel lifetime,
// gratuitous ARP, unsolicited NA, a watch for another MAC announcing a held VIP,
// paced tickle ACKs).
//
// It executes decisions and must not make them: who holds a VIP is decided in
// discovery/vip from the cluster view (xmppd/server wires the two). It must not
// import xmppd, discovery or storage.
package netcfg
