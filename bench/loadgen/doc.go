// Package loadgen is the benchmark's XMPP load client: a lean, allocation-conscious
// client-to-server connection (TCP, stream, STARTTLS, SCRAM-SHA-1/SHA-256, resource
// bind, presence, messages, rosters, XEP-0077 in-band registration) built for driving
// thousands of sessions from one core.
//
// It owns the wire protocol of the load generator only: it does not start servers
// (bench/servers) or define workloads (bench/workload), and it must not import xmppd:
// the harness measures xmppd from the outside, exactly as it measures ejabberd and
// Prosody. Every network call carries a deadline.
package loadgen
