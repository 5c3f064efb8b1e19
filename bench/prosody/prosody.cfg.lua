-- Prosody configuration for xedge's benchmark (bench/cmd/bench fills in @...@).
-- Everything that throttles a load test is off; see docs/bench.md for the list:
--   * mod_limits is not loaded (Debian's config loads it with 10 kB/s per client);
--   * registration: allow_registration = true, no invite-only registration
--     (mod_invites_register not loaded), no per-IP registration throttle;
--   * c2s_require_encryption = false so the "without TLS" idle-session figure exists
--     (STARTTLS is still offered and used by every TLS workload);
--   * mod_smacks, mod_carbons, mod_pep, mod_csi and the rest of Debian's defaults
--     are not loaded: only what the workloads exercise (same feature set as
--     ejabberd's and xmppd's benchmark configurations), plus message archiving
--     (mod_mam with default_archive_policy = false: only the MAM workload's owner
--     turns it on, through XEP-0313 preferences, so the chat workloads measure
--     routing as before; the cap of 10,000 items per archive raised to hold the
--     MAM workload's 100,000) and group chat (the muc component on
--     conference.DOMAIN, with mod_muc_mam: rooms archive their messages, as
--     xmppd's do).
--   * users' archives in SQLite through mod_storage_sql (Debian's
--     lua-dbi-sqlite3), what Prosody's documentation advises for archives of
--     this size: its internal storage reads a whole archive file per query (5-7 s
--     for 100,000 messages). Rooms' archives stay in the internal storage (an
--     append to a file per message): in SQLite each room message is a
--     transaction with an fsync on Prosody's only thread, and the 200-occupant
--     room delivered 8 messages/s here, a figure of this machine's disk, not of
--     Prosody. The harness writes the storage lines below; without
--     lua-dbi-sqlite3 every store is internal.
daemonize = false
pidfile = "@DIR@/prosody.pid"
data_path = "@DIR@/data"
admins = { }
network_backend = "epoll"
-- Prosody 0.12's server_epoll keeps Nagle's algorithm on (nagle = true); with the
-- peer's delayed ACKs every small write waits ~40 ms. ejabberd and Go (xmppd) set
-- TCP_NODELAY, so it is off here too: the figures compare server work, not Nagle.
-- tcp_backlog 1024 as for ejabberd (default 128).
network_settings = { tcp_backlog = 1024; nagle = false }
interfaces = { "127.0.0.1" }
c2s_ports = { @PORT@ }
c2s_direct_tls_ports = { }
s2s_ports = { }
modules_enabled = {
	"roster";
	"saslauth";
	"tls";
	"disco";
	"ping";
	"register";
	"mam";
}
modules_disabled = { "s2s"; "offline"; }
allow_registration = true
registration_invite_only = false
c2s_require_encryption = false
s2s_require_encryption = false
authentication = "internal_hashed"
-- SCRAM iteration count as in ejabberd and xmppd (4096; Prosody's default is
-- 10000): only registration pays it, but provisioning the same users then costs
-- the same on all three.
default_iteration_count = 4096
@PROSODYSTORAGE@
storage_archive_item_limit = 200000
archive_expires_after = "never"
default_archive_policy = false
log = {
	{ levels = { min = "warn" }; to = "file"; filename = "@DIR@/prosody.log" };
}
ssl = {
	certificate = "@CERT@";
	key = "@KEY@";
}
VirtualHost "@DOMAIN@"
Component "conference.@DOMAIN@" "muc"
	modules_enabled = { "muc_mam" }
