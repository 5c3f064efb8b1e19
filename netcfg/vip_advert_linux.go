package netcfg

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/mdlayher/packet"
)

// Adverts returns this node's advert counters.
func (v *VIPs) Adverts() AdvertStats {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.adv
}

// sendAdverts broadcasts this node's advert every AdvertInterval until ctx ends.
func (v *VIPs) sendAdverts(ctx context.Context, c *packet.Conn) {
	defer v.wg.Done()
	t := time.NewTicker(v.opt.AdvertInterval)
	defer t.Stop()
	dst := &packet.Addr{HardwareAddr: broadcastMAC}
	var seq uint32
	var last time.Time
	for {
		seq++
		f := advertFrame(v.ifi.HardwareAddr, v.opt.AdvertKey, v.opt.AdvertNode, v.opt.AdvertInterval, seq)
		_, err := c.WriteTo(f, dst)
		now := time.Now()
		v.mu.Lock()
		if err != nil {
			v.adv.Errors++
		} else {
			v.adv.Sent++
			if !last.IsZero() {
				v.adv.LastGap = now.Sub(last)
				v.adv.MaxGap = max(v.adv.MaxGap, v.adv.LastGap)
			}
			last = now
		}
		v.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// watchAdverts reports every authenticated advert of another node.
func (v *VIPs) watchAdverts(ctx context.Context, c *packet.Conn) {
	defer v.wg.Done()
	buf := make([]byte, 1500)
	for ctx.Err() == nil {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			sleep(ctx, 100*time.Millisecond) // ENETDOWN while the link is down
			continue
		}
		if n < 14 {
			continue
		}
		a, err := parseAdvert(buf[14:n], v.opt.AdvertKey)
		if err != nil || a.Node == v.opt.AdvertNode {
			continue
		}
		a.At = time.Now()
		if pa, ok := from.(*packet.Addr); ok {
			a.From = pa.HardwareAddr
		}
		if v.opt.OnAdvert != nil {
			v.opt.OnAdvert(a)
		}
	}
}
