-- Prosody for the compatibility suite (the test fills in @...@): the modules
-- behind the features the scenarios exercise, with their defaults.
daemonize = false
pidfile = "@DIR@/prosody.pid"
data_path = "@DIR@/data"
admins = { }
network_backend = "epoll"
network_settings = { nagle = false }
interfaces = { "127.0.0.1" }
c2s_ports = { @PORT@ }
c2s_direct_tls_ports = { }
s2s_ports = { }
http_ports = { @HTTPPORT@ }
http_interfaces = { "127.0.0.1" }
https_ports = { }
http_external_url = "http://127.0.0.1:@HTTPPORT@/"
-- Requests come to 127.0.0.1, not to upload.DOMAIN: serve them as that host.
http_default_host = "upload.@DOMAIN@"
modules_enabled = {
	"roster";
	"saslauth";
	"tls";
	"disco";
	"ping";
	"register";
	"private";
	"pep";
	"bookmarks";
	"mam";
}
modules_disabled = { "s2s"; "offline"; }
allow_registration = true
registration_invite_only = false
c2s_require_encryption = false
s2s_require_encryption = false
authentication = "internal_hashed"
storage = "internal"
log = {
	{ levels = { min = "warn" }; to = "file"; filename = "@DIR@/prosody.log" };
}
ssl = {
	certificate = "@CERT@";
	key = "@KEY@";
}
VirtualHost "@DOMAIN@"
Component "conference.@DOMAIN@" "muc"
Component "upload.@DOMAIN@" "http_file_share"
	http_file_share_size_limit = 100000
