package netcfg

import (
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// VIPOptions configures the VIP mechanics on one interface (Linux only: elsewhere
// NewVIPs fails).
type VIPOptions struct {
	Interface string
	// Burst is the number of gratuitous ARPs (or unsolicited NAs) per announcement
	// (keepalived's garp_master_repeat; default 3).
	Burst int
	// Bursts are the delays after taking a VIP at which an announcement is sent
	// (default 0, 0.5 s, 1 s, 2 s, 5 s: a neighbour that updated its entry less than
	// its locktime ago, 1 s on Linux, ignores one burst but not the next).
	Bursts []time.Duration
	// Refresh re-announces every held VIP this often (keepalived's
	// garp_master_refresh; default 10 s; negative: never).
	Refresh time.Duration
	// TickleRate paces tickle ACKs, per second (default 500), so the reconnect wave
	// of a lost node's clients does not flood the survivors at once.
	TickleRate int
	// Lifetime is the valid lifetime of each VIP address, refreshed every third of
	// it while held (default 3 s; negative: permanent). A holder that dies or hangs
	// (SIGKILL, SIGSTOP, a wedged process) loses the address within Lifetime
	// without anyone removing it, so its kernel stops answering ARP for the VIP.
	Lifetime time.Duration
	// OnConflict is called (at most once per VIP per 500 ms) when another host
	// announces a VIP this interface holds: an ARP or NA for it from another MAC.
	// The caller decides (re-announce if it is the owner, else Remove at once).
	OnConflict func(vip netip.Addr, from net.HardwareAddr)
	// AdvertNode, when set with a positive AdvertInterval, makes the interface
	// send this node's VIP advert (a heartbeat, VRRP's advertisement) every
	// AdvertInterval, authenticated with AdvertKey (AdvertKey(cluster key)),
	// and report every other node's advert with the same key to OnAdvert, as
	// read. Deciding what an advert's absence means is the caller's.
	AdvertNode     string
	AdvertInterval time.Duration
	AdvertKey      []byte
	OnAdvert       func(Advert)
	Log            *slog.Logger
}
