package iscsi

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// DefaultPort is the iSCSI well-known port.
const DefaultPort = 3260

// Config says where a LUN is and how to talk to it. The zero value of every
// tuning field means its default (see withDefaults).
type Config struct {
	// Portal is host:port of the target portal (port defaults to 3260).
	Portal string
	// Target is the target's IQN. Empty only for discovery.
	Target string
	// LUN is the logical unit number.
	LUN uint64
	// InitiatorName is our IQN; default iqn.2025-01.org.xedge:<hostname>.
	InitiatorName string

	// CHAP: User and Secret authenticate us to the target. With TargetUser and
	// TargetSecret set too, the target must authenticate itself (mutual CHAP).
	// With credentials set, only CHAP is offered (never a fallback to None).
	User, Secret             string
	TargetUser, TargetSecret string

	// HeaderDigest and DataDigest ask for CRC32C digests; a target that refuses
	// fails the login (we never silently run without a digest that was asked for).
	HeaderDigest, DataDigest bool

	// Login negotiation offers (RFC 7143 §13). Defaults: 256 KiB, 256 KiB, 64 KiB,
	// 1; ImmediateData on, InitialR2T off (both are offers: the target may refuse).
	MaxRecvDataSegmentLength int
	MaxBurstLength           int
	FirstBurstLength         int
	MaxOutstandingR2T        int
	NoImmediateData          bool
	InitialR2T               bool

	// TaskTimeout bounds every command, login step and keepalive (default 3 s).
	// A command that times out means the connection is declared lost.
	TaskTimeout time.Duration
	// DialTimeout bounds one round of TCP connects (default 500 ms). Within it a
	// fresh connect starts every DialTimeout/4 while earlier ones hang: a connect
	// that does not complete at once is usually a dropped SYN, which the kernel
	// would retry only after 1 s, 3 s, 7 s.
	DialTimeout time.Duration
	// NOPInterval is how long an idle connection waits before a NOP-Out ping
	// (default 1 s). The ping itself is bounded by TaskTimeout.
	NOPInterval time.Duration
	// ReconnectMin and ReconnectMax bound the re-login backoff (defaults 25 ms and
	// 250 ms, doubling with ±20% jitter).
	ReconnectMin, ReconnectMax time.Duration
	// MaxInFlight caps the commands outstanding at once (default 32; the target's
	// CmdSN window caps it further).
	MaxInFlight int
	// MaxTransfer is the largest single READ/WRITE in bytes; larger I/O is split
	// into commands issued concurrently (default 1 MiB).
	MaxTransfer int
	// WriteBack turns off FUA: writes are acknowledged from the target's cache and
	// made durable by Sync (SYNCHRONIZE CACHE). See the package doc.
	WriteBack bool

	// Logger receives state transitions (default: slog.Default()).
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.InitiatorName == "" {
		h, _ := os.Hostname()
		if h == "" {
			h = "node"
		}
		c.InitiatorName = "iqn.2025-01.org.xedge:" + strings.ToLower(h)
	}
	if c.Portal != "" {
		if _, _, err := net.SplitHostPort(c.Portal); err != nil {
			c.Portal = net.JoinHostPort(strings.Trim(c.Portal, "[]"), strconv.Itoa(DefaultPort))
		}
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.MaxRecvDataSegmentLength, 256<<10)
	def(&c.MaxBurstLength, 256<<10)
	def(&c.FirstBurstLength, 64<<10)
	def(&c.MaxOutstandingR2T, 1)
	def(&c.MaxInFlight, 32)
	def(&c.MaxTransfer, 1<<20)
	c.MaxRecvDataSegmentLength = min(max(c.MaxRecvDataSegmentLength, 512), 1<<24-1)
	c.MaxBurstLength = min(max(c.MaxBurstLength, 512), 1<<24-1)
	c.FirstBurstLength = min(max(c.FirstBurstLength, 512), c.MaxBurstLength)
	dd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	dd(&c.TaskTimeout, 3*time.Second)
	dd(&c.DialTimeout, 500*time.Millisecond)
	dd(&c.NOPInterval, time.Second)
	dd(&c.ReconnectMin, 25*time.Millisecond)
	dd(&c.ReconnectMax, 250*time.Millisecond)
	if c.ReconnectMax < c.ReconnectMin {
		c.ReconnectMax = c.ReconnectMin
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// ErrBadURL reports an iscsi:// URL that does not parse.
var ErrBadURL = errors.New("iscsi: bad URL")

// ParseURL parses iscsi://[user[:secret]@]host[:port]/target-iqn/lun into a
// Config. The target and LUN may be left out (discovery needs neither). Query
// parameters: digest=crc32c (both digests), header_digest=crc32c,
// data_digest=crc32c, target_user= and target_secret= (mutual CHAP),
// initiator= (our IQN), timeout= (task timeout, a Go duration), writeback=1.
func ParseURL(raw string) (Config, error) {
	var c Config
	u, err := url.Parse(raw)
	if err != nil {
		return c, fmt.Errorf("%w: %v", ErrBadURL, err)
	}
	if u.Scheme != "iscsi" {
		return c, fmt.Errorf("%w: scheme %q, want iscsi", ErrBadURL, u.Scheme)
	}
	if u.Host == "" {
		return c, fmt.Errorf("%w: no host in %q", ErrBadURL, raw)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = strconv.Itoa(DefaultPort)
	}
	c.Portal = net.JoinHostPort(host, port)
	if u.User != nil {
		c.User = u.User.Username()
		c.Secret, _ = u.User.Password()
	}
	path := strings.Trim(u.Path, "/")
	if path != "" {
		parts := strings.Split(path, "/")
		c.Target = parts[0]
		switch len(parts) {
		case 1:
		case 2:
			lun, err := strconv.ParseUint(parts[1], 10, 64)
			if err != nil {
				return c, fmt.Errorf("%w: LUN %q is not a number", ErrBadURL, parts[1])
			}
			c.LUN = lun
		default:
			return c, fmt.Errorf("%w: path %q is not /target-iqn/lun", ErrBadURL, u.Path)
		}
	}
	q := u.Query()
	isCRC := func(k string) (bool, error) {
		switch strings.ToLower(q.Get(k)) {
		case "", "none":
			return false, nil
		case "crc32c":
			return true, nil
		}
		return false, fmt.Errorf("%w: %s=%q (want crc32c or none)", ErrBadURL, k, q.Get(k))
	}
	both, err := isCRC("digest")
	if err != nil {
		return c, err
	}
	h, err := isCRC("header_digest")
	if err != nil {
		return c, err
	}
	d, err := isCRC("data_digest")
	if err != nil {
		return c, err
	}
	c.HeaderDigest, c.DataDigest = both || h, both || d
	c.TargetUser, c.TargetSecret = q.Get("target_user"), q.Get("target_secret")
	c.InitiatorName = q.Get("initiator")
	if t := q.Get("timeout"); t != "" {
		c.TaskTimeout, err = time.ParseDuration(t)
		if err != nil || c.TaskTimeout <= 0 {
			return c, fmt.Errorf("%w: timeout=%q", ErrBadURL, t)
		}
	}
	switch q.Get("writeback") {
	case "", "0", "false":
	default:
		c.WriteBack = true
	}
	return c, nil
}

// Redacted returns the URL of c without its secrets, for logs.
func (c Config) Redacted() string {
	u := url.URL{Scheme: "iscsi", Host: c.Portal, Path: "/" + c.Target + "/" + strconv.FormatUint(c.LUN, 10)}
	if c.User != "" {
		u.User = url.UserPassword(c.User, "xxxxx")
	}
	return u.String()
}
