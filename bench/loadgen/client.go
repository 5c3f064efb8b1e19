package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"
)

// Namespaces the client speaks.
const (
	nsTLS      = "urn:ietf:params:xml:ns:xmpp-tls"
	nsSASL     = "urn:ietf:params:xml:ns:xmpp-sasl"
	nsBind     = "urn:ietf:params:xml:ns:xmpp-bind"
	nsSession  = "urn:ietf:params:xml:ns:xmpp-session"
	nsRegister = "jabber:iq:register"
	nsRoster   = "jabber:iq:roster"
	nsPing     = "urn:xmpp:ping"
)

// ErrTLSRequired is returned by Auth when the server requires STARTTLS first.
var ErrTLSRequired = errors.New("server requires STARTTLS")

// ErrConflict is returned by Register when the account already exists.
var ErrConflict = errors.New("account already exists")

// Options configure one client connection.
type Options struct {
	Addr          string        // host:port of the c2s listener (loopback)
	Domain        string        // the XMPP domain (stream 'to', JID domain)
	StartTLS      bool          // negotiate STARTTLS before anything else
	TLSIfRequired bool          // negotiate STARTTLS only if the server requires it
	TLSIfOffered  bool          // negotiate STARTTLS whenever the server offers it
	Verifier      *Verifier     // checks the server's certificate; nil: not checked (unit tests, readiness probes)
	Mechanism     string        // SASL mechanism; default SCRAM-SHA-1
	Resource      string        // resource to bind; default "bench"
	Timeout       time.Duration // deadline for each protocol step; default 20s
	// RxStamps asks the kernel for the receive time of what is read
	// (Conn.RxStamp; Linux, SO_TIMESTAMPNS).
	RxStamps bool
}

func (o *Options) timeout() time.Duration {
	if o.Timeout <= 0 {
		return 20 * time.Second
	}
	return o.Timeout
}

// Conn is one client-to-server XMPP connection.
type Conn struct {
	opts     Options
	raw      net.Conn
	rx       *rxConn  // raw, when Options.RxStamps
	conn     net.Conn // raw or the TLS layer over it
	sc       *Scanner
	features []byte
	JID      string // full JID after Bind
	TLS      bool
	seq      atomic.Uint64
	pending  [][]byte  // elements read while waiting for an iq, returned by Next first
	dl       time.Time // current deadline of conn (see deadline)
	wbuf     []byte    // scratch for building stanzas
}

// maxPending bounds the elements kept while waiting for an iq answer.
const maxPending = 10000

// Dial connects, opens the stream and, if asked, negotiates STARTTLS.
func Dial(ctx context.Context, opts Options) (*Conn, error) {
	// No TCP keepalive: benchmark connections are short or watched by the workload,
	// and enabling it costs four setsockopt calls per connection.
	d := net.Dialer{Timeout: opts.timeout(), KeepAlive: -1}
	raw, err := d.DialContext(ctx, "tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", opts.Addr, err)
	}
	var rx *rxConn
	if opts.RxStamps {
		if rx, err = newRxConn(raw); err != nil {
			raw.Close()
			return nil, err
		}
		raw = rx
	}
	c := &Conn{opts: opts, raw: raw, rx: rx, conn: raw, sc: NewScanner(raw)}
	if err := c.open(); err != nil {
		raw.Close()
		return nil, err
	}
	if opts.StartTLS || (opts.TLSIfRequired && c.TLSRequired()) || (opts.TLSIfOffered && Child(c.features, "starttls") != nil) {
		if err := c.startTLS(ctx); err != nil {
			raw.Close()
			return nil, err
		}
	}
	return c, nil
}

// deadline bounds the next protocol step by the step timeout. Setting a deadline
// touches the runtime's timers; a login has ~8 steps, so it is renewed only once
// less than half the timeout is left (each step still gets at least timeout/2).
func (c *Conn) deadline() {
	now := time.Now()
	if c.dl.Sub(now) > c.opts.timeout()/2 {
		return
	}
	c.dl = now.Add(c.opts.timeout())
	_ = c.conn.SetDeadline(c.dl)
}

// open sends a stream header and reads the server's header and features.
func (c *Conn) open() error {
	c.deadline()
	c.sc.Restart()
	if err := c.Send([]byte("<?xml version='1.0'?><stream:stream to='" + c.opts.Domain +
		"' version='1.0' xml:lang='en' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")); err != nil {
		return err
	}
	hdr, err := c.sc.Next()
	if err != nil {
		return fmt.Errorf("read stream header: %w", err)
	}
	if string(Name(hdr)) != "stream:stream" {
		return fmt.Errorf("expected stream header, got %.200q", hdr)
	}
	f, err := c.sc.Next()
	if err != nil {
		return fmt.Errorf("read stream features: %w", err)
	}
	if string(Name(f)) != "stream:features" {
		return fmt.Errorf("expected stream features, got %.300q", f)
	}
	c.features = append(c.features[:0], f...)
	return nil
}

// TLSRequired reports whether the last features require STARTTLS.
func (c *Conn) TLSRequired() bool {
	st := Child(c.features, "starttls")
	return st != nil && Child(st, "required") != nil
}

// Features returns the last stream features element.
func (c *Conn) Features() []byte { return c.features }

func (c *Conn) startTLS(ctx context.Context) error {
	if Child(c.features, "starttls") == nil {
		return errors.New("server does not offer STARTTLS")
	}
	if err := c.Send([]byte("<starttls xmlns='" + nsTLS + "'/>")); err != nil {
		return err
	}
	el, err := c.sc.Next()
	if err != nil {
		return fmt.Errorf("starttls: %w", err)
	}
	if string(Name(el)) != "proceed" {
		return fmt.Errorf("starttls refused: %.200q", el)
	}
	if c.sc.Buffered() != 0 {
		return errors.New("starttls: data after <proceed/>")
	}
	tc := tls.Client(c.raw, clientTLS(c.opts.Domain, c.opts.Verifier))
	// Bounded by the connection's deadline (set for this step just above, renewed
	// here), not by a context: HandshakeContext with a cancellable context starts a
	// watcher goroutine per handshake.
	c.dl = time.Time{}
	c.deadline()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("tls handshake: %w", err)
	}
	c.conn = tc
	c.TLS = true
	c.sc.Reset(tc)
	return c.open()
}

// Send writes raw XML.
func (c *Conn) Send(b []byte) error {
	if _, err := c.conn.Write(b); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// Next reads the next top-level element; the slice is valid until the next call.
func (c *Conn) Next() ([]byte, error) {
	if len(c.pending) > 0 {
		el := c.pending[0]
		c.pending = c.pending[1:]
		return el, nil
	}
	return c.wire()
}

// wire reads the next element from the connection, bypassing pending.
func (c *Conn) wire() ([]byte, error) {
	el, err := c.sc.Next()
	if err == nil && string(Name(el)) == "stream:error" {
		return nil, fmt.Errorf("stream error: %.300q", el)
	}
	return el, err
}

// SetDeadline sets the read and write deadline of the connection.
func (c *Conn) SetDeadline(t time.Time) error { c.dl = t; return c.conn.SetDeadline(t) }

// SetWriteDeadline sets the write deadline of the connection.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// RxStamp returns when the kernel received the newest bytes the last read of
// the connection returned (Unix ns, CLOCK_REALTIME), so for the element Next
// just returned, the time by which all of it had arrived; 0 without
// Options.RxStamps. Call it from the goroutine that calls Next.
func (c *Conn) RxStamp() int64 {
	if c.rx == nil {
		return 0
	}
	return c.rx.stamp
}

// NextID returns a connection-unique stanza id.
func (c *Conn) NextID() string { return "b" + strconv.FormatUint(c.seq.Add(1), 36) }

// await reads until the iq with this id arrives; other elements go to other, or
// if other is nil are kept (up to maxPending) for Next.
func (c *Conn) await(id string, other func([]byte) error) ([]byte, error) {
	for range 100000 {
		el, err := c.wire()
		if err != nil {
			return nil, err
		}
		if string(Name(el)) == "iq" && string(Attr(el, "id")) == id {
			return el, nil
		}
		if other != nil {
			if err := other(el); err != nil {
				return nil, err
			}
		} else if len(c.pending) < maxPending {
			c.pending = append(c.pending, append([]byte(nil), el...))
		}
	}
	return nil, fmt.Errorf("no answer to iq %s", id)
}

// Register creates an account with XEP-0077 in-band registration on an
// unauthenticated stream. It returns ErrConflict if the account exists.
func (c *Conn) Register(user, pass string) error {
	c.deadline()
	id := c.NextID()
	if err := c.Send([]byte("<iq type='set' id='" + id + "'><query xmlns='" + nsRegister + "'><username>" +
		Escape(user) + "</username><password>" + Escape(pass) + "</password></query></iq>")); err != nil {
		return err
	}
	el, err := c.await(id, nil)
	if err != nil {
		return fmt.Errorf("register %s: %w", user, err)
	}
	if string(Attr(el, "type")) == "result" {
		return nil
	}
	if Child(el, "conflict") != nil {
		return ErrConflict
	}
	return fmt.Errorf("register %s: %.300q", user, el)
}

// Auth authenticates with SCRAM and restarts the stream.
func (c *Conn) Auth(user, pass string) error {
	c.deadline()
	mech := c.opts.Mechanism
	if mech == "" {
		mech = ScramSHA1
	}
	if !c.TLS && c.TLSRequired() {
		return ErrTLSRequired
	}
	if !bytes.Contains(c.features, []byte(">"+mech+"<")) {
		return fmt.Errorf("server does not offer %s: %.300q", mech, c.features)
	}
	s, err := NewScram(mech, user, pass, "")
	if err != nil {
		return err
	}
	first := base64.StdEncoding.EncodeToString([]byte(s.ClientFirst()))
	if err := c.Send([]byte("<auth xmlns='" + nsSASL + "' mechanism='" + mech + "'>" + first + "</auth>")); err != nil {
		return err
	}
	el, err := c.Next()
	if err != nil {
		return fmt.Errorf("sasl: %w", err)
	}
	if string(Name(el)) != "challenge" {
		return fmt.Errorf("sasl %s: %.300q", user, el)
	}
	sf, err := base64.StdEncoding.DecodeString(Text(el))
	if err != nil {
		return fmt.Errorf("sasl challenge: %w", err)
	}
	final, err := s.ClientFinal(string(sf))
	if err != nil {
		return err
	}
	if err := c.Send([]byte("<response xmlns='" + nsSASL + "'>" + base64.StdEncoding.EncodeToString([]byte(final)) + "</response>")); err != nil {
		return err
	}
	el, err = c.Next()
	if err != nil {
		return fmt.Errorf("sasl: %w", err)
	}
	switch string(Name(el)) {
	case "success":
	case "challenge": // some servers send v= in a challenge, then expect an empty response
		v, _ := base64.StdEncoding.DecodeString(Text(el))
		if err := s.Verify(string(v)); err != nil {
			return err
		}
		if err := c.Send([]byte("<response xmlns='" + nsSASL + "'/>")); err != nil {
			return err
		}
		if el, err = c.Next(); err != nil {
			return fmt.Errorf("sasl: %w", err)
		}
		if string(Name(el)) != "success" {
			return fmt.Errorf("sasl %s: %.300q", user, el)
		}
		return c.open()
	default:
		return fmt.Errorf("sasl %s failed: %.300q", user, el)
	}
	v, err := base64.StdEncoding.DecodeString(Text(el))
	if err != nil {
		return fmt.Errorf("sasl success: %w", err)
	}
	if err := s.Verify(string(v)); err != nil {
		return err
	}
	return c.open()
}

// Bind binds a resource (and opens a legacy session if the server requires it).
func (c *Conn) Bind() error {
	c.deadline()
	res := c.opts.Resource
	if res == "" {
		res = "bench"
	}
	id := c.NextID()
	if err := c.Send([]byte("<iq type='set' id='" + id + "'><bind xmlns='" + nsBind + "'><resource>" +
		Escape(res) + "</resource></bind></iq>")); err != nil {
		return err
	}
	el, err := c.await(id, nil)
	if err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if string(Attr(el, "type")) != "result" {
		return fmt.Errorf("bind: %.300q", el)
	}
	c.JID = Text(Child(el, "jid"))
	if sess := Child(c.features, "session"); sess != nil && Child(sess, "optional") == nil {
		id := c.NextID()
		if err := c.Send([]byte("<iq type='set' id='" + id + "'><session xmlns='" + nsSession + "'/></iq>")); err != nil {
			return err
		}
		if el, err = c.await(id, nil); err != nil {
			return fmt.Errorf("session: %w", err)
		}
		if string(Attr(el, "type")) != "result" {
			return fmt.Errorf("session: %.300q", el)
		}
	}
	return nil
}

// Ping sends an XEP-0199 ping to the server and waits for its answer (a result or
// an error both prove the server processed everything sent before); other elements
// read meanwhile go to other.
func (c *Conn) Ping(other func([]byte) error) error {
	c.deadline()
	id := c.NextID()
	if err := c.Send([]byte("<iq type='get' id='" + id + "' to='" + c.opts.Domain + "'><ping xmlns='" + nsPing + "'/></iq>")); err != nil {
		return err
	}
	_, err := c.await(id, other)
	return err
}

// Login is the full login the benchmark measures: TCP, stream, optional STARTTLS,
// SCRAM, bind, initial presence, then a ping round trip so the login counts only
// once the server has processed the initial presence.
func Login(ctx context.Context, opts Options, user, pass string) (*Conn, error) {
	c, err := Dial(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := c.login(user, pass); err != nil {
		c.raw.Close()
		return nil, err
	}
	return c, nil
}

func (c *Conn) login(user, pass string) error {
	if err := c.Auth(user, pass); err != nil {
		return err
	}
	if err := c.Bind(); err != nil {
		return err
	}
	// Initial presence and the ping go out in one write: the client sends them
	// back to back anyway, and one TLS record + one syscall is less generator work.
	id := c.NextID()
	c.wbuf = append(append(append(append(append(c.wbuf[:0], "<presence/><iq type='get' id='"...), id...), "' to='"...), c.opts.Domain...),
		"'><ping xmlns='"+nsPing+"'/></iq>"...)
	if err := c.Send(c.wbuf); err != nil {
		return err
	}
	if _, err := c.await(id, nil); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// Roster fetches the roster and returns the items as (jid, subscription) pairs.
func (c *Conn) Roster(other func([]byte) error) (map[string]string, error) {
	c.deadline()
	id := c.NextID()
	if err := c.Send([]byte("<iq type='get' id='" + id + "'><query xmlns='" + nsRoster + "'/></iq>")); err != nil {
		return nil, err
	}
	el, err := c.await(id, other)
	if err != nil {
		return nil, fmt.Errorf("roster: %w", err)
	}
	if string(Attr(el, "type")) != "result" {
		return nil, fmt.Errorf("roster: %.300q", el)
	}
	items := map[string]string{}
	p := el
	for range 100000 {
		it := Child(p, "item")
		if it == nil {
			break
		}
		items[Unescape(Attr(it, "jid"))] = string(Attr(it, "subscription"))
		idx := bytes.Index(p, it)
		p = append([]byte("<q>"), p[idx+len(it):]...)
	}
	return items, nil
}

// Close ends the stream and closes the connection without waiting for the
// server's close.
func (c *Conn) Close() error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.conn.Write([]byte("</stream:stream>"))
	return c.raw.Close()
}

// Abort closes the TCP connection at once.
func (c *Conn) Abort() error { return c.raw.Close() }
