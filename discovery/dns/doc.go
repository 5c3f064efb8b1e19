// Package dns publishes the cluster in DNS so clients find a live node: SRV
// records for _xmpp-client._tcp, _xmpps-client._tcp (XEP-0368) and
// _xmpp-server._tcp, A/AAAA records for the nodes and the VIPs, built from the
// cluster view (Builder), served by an embedded authoritative server (Server)
// and pushed to an existing primary server with RFC 2136 updates signed with
// TSIG (Pusher), each push checked by a follow-up query. Publisher ties them
// together: it watches the view and republishes within a fraction of a second.
//
// It owns the record rules (priorities, weights, serials) and the DNS wire work
// (github.com/miekg/dns v1, used only inside this package). It must not import
// xmppd packages or contain XMPP logic: xmppd hands it a View.
package dns
