package config

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// UploadConfig holds the settings of the features served on the HTTP listener
// (--http) besides metrics and the web admin page: HTTP file upload
// (XEP-0363), XMPP over WebSocket (RFC 7395) and its XEP-0156 host-meta.
// Its flags, defaults and checks register themselves in init (registerFeature).
// docs/http.md explains them.
type UploadConfig struct {
	Dir       string        // upload-dir: directory holding uploaded files (empty: upload off)
	Domain    string        // upload-domain: the upload service's JID (default upload.DOMAIN)
	MaxSize   int64         // upload-max-size: largest file in bytes
	Quota     int64         // upload-quota: bytes one user may keep stored (0: no limit)
	Expire    time.Duration // upload-expire: files older than this are removed (0: kept)
	URL       string        // upload-url: public base URL of the HTTP listener (default: its own URL)
	WebSocket bool          // websocket: serve RFC 7395 on /xmpp-websocket and host-meta
	Origins   string        // websocket-origins: allowed browser Origin host patterns (empty: any)

	ExtServices string        // ext-services: STUN/TURN servers for XEP-0215, TYPE:HOST:PORT[/udp|/tcp],...
	ExtSecret   string        // ext-services-secret: TURN REST shared secret (coturn static-auth-secret)
	ExtTTL      time.Duration // ext-services-ttl: lifetime of handed-out TURN credentials
}

// OriginList returns websocket-origins split on commas or blanks.
func (u UploadConfig) OriginList() []string {
	return strings.FieldsFunc(u.Origins, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
}

func init() {
	registerFeature(featureSettings{
		defaults: func(c *Config) {
			c.Upload = UploadConfig{MaxSize: 100 << 20, Quota: 1 << 30, Expire: 30 * 24 * time.Hour, WebSocket: true, ExtTTL: 24 * time.Hour}
		},
		flags: func(c *Config, fs *flag.FlagSet) {
			u := &c.Upload
			fs.StringVar(&u.Dir, "upload-dir", u.Dir, "serve HTTP file upload (XEP-0363) on the http listener, storing files in this directory (empty: off; on a cluster, storage every node mounts)")
			fs.StringVar(&u.Domain, "upload-domain", u.Domain, "JID of the upload service (default upload.DOMAIN)")
			fs.Int64Var(&u.MaxSize, "upload-max-size", u.MaxSize, "largest file a client may upload, in bytes")
			fs.Int64Var(&u.Quota, "upload-quota", u.Quota, "bytes one user may keep stored (0: no limit)")
			fs.DurationVar(&u.Expire, "upload-expire", u.Expire, "remove uploaded files older than this (0: keep them)")
			fs.StringVar(&u.URL, "upload-url", u.URL, "public base URL of the http listener for upload slots and host-meta, e.g. https://xmpp.example.org:5443 (default: the listener's own address)")
			fs.BoolVar(&u.WebSocket, "websocket", u.WebSocket, "serve XMPP over WebSocket (RFC 7395) on /xmpp-websocket and XEP-0156 host-meta on the http listener")
			fs.StringVar(&u.ExtServices, "ext-services", u.ExtServices, "STUN/TURN servers announced to clients (XEP-0215), comma-separated TYPE:HOST:PORT[/udp|/tcp], TYPE one of stun, stuns, turn, turns")
			fs.StringVar(&u.ExtSecret, "ext-services-secret", u.ExtSecret, "shared secret of the TURN servers (coturn static-auth-secret): clients get time-limited credentials")
			fs.DurationVar(&u.ExtTTL, "ext-services-ttl", u.ExtTTL, "lifetime of the TURN credentials handed out")
			fs.StringVar(&u.Origins, "websocket-origins", u.Origins, "comma-separated Origin host patterns browsers may connect from, e.g. chat.example.org,*.example.org (empty: any)")
		},
		check: func(c *Config) []error {
			u := c.Upload
			var errs []error
			if u.Dir != "" && c.Ops.HTTP == "" {
				errs = append(errs, errors.New("upload-dir needs the http listener (set http)"))
			}
			if u.MaxSize <= 0 {
				errs = append(errs, fmt.Errorf("upload-max-size %d: want > 0", u.MaxSize))
			}
			if u.ExtTTL <= 0 {
				errs = append(errs, errors.New("ext-services-ttl must be positive"))
			}
			if u.Quota < 0 || u.Expire < 0 {
				errs = append(errs, errors.New("upload-quota and upload-expire must not be negative"))
			}
			if u.URL != "" {
				p, err := url.Parse(u.URL)
				if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
					errs = append(errs, fmt.Errorf("upload-url %q: want http(s)://host[:port][/prefix]", u.URL))
				}
			}
			return errs
		},
	})
}
