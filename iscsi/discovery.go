package iscsi

import (
	"context"
	"fmt"
	"time"
)

// DiscoveredTarget is one target a portal reported to SendTargets.
type DiscoveredTarget struct {
	Name      string   `json:"name"`
	Addresses []string `json:"addresses"` // "host:port,tpgt" as the target sent them
}

// maxDiscoveryBytes bounds the total SendTargets answer we accept.
const maxDiscoveryBytes = 1 << 20

// Discover opens a discovery session on cfg.Portal and asks for SendTargets=All.
// cfg.Target and cfg.LUN are ignored; CHAP credentials are used if set.
func Discover(ctx context.Context, cfg Config) ([]DiscoveredTarget, error) {
	cfg = cfg.withDefaults()
	sid := &sessionID{isid: newISID(), cmdSN: 1, discovery: true}
	nc, res, err := dialLogin(ctx, &cfg, sid)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()

	r := newPDUReader(nc, res.params.MaxRecvDSL)
	dg := digests{res.params.HeaderDigest, res.params.DataDigest}
	r.dg = dg
	w := pduWriter{dg: dg}
	cmdSN, expStatSN := res.expCmdSN, res.expStatSN
	const itt = 0x1d15c
	ttt := uint32(reservedTag)
	body := encodeText([]kv{{"SendTargets", "All"}})
	var answer []byte
	for round := 0; ; round++ {
		if round > 1024 {
			return nil, fmt.Errorf("%w: SendTargets answer never ended", ErrProtocol)
		}
		req := &pdu{}
		req.bhs[0] = flagImmed | opTextReq
		req.bhs[1] = flagFinal
		req.setITT(itt)
		req.put32(20, ttt)
		req.put32(24, cmdSN)
		req.put32(28, expStatSN)
		req.data = body
		body = nil
		w.add(req)
		nc.SetDeadline(time.Now().Add(cfg.TaskTimeout))
		if err := w.flush(nc); err != nil {
			return nil, fmt.Errorf("iscsi: discovery: %w", err)
		}
		var resp *pdu
		for {
			resp, err = r.read()
			if err != nil {
				return nil, fmt.Errorf("iscsi: discovery: %w", err)
			}
			if resp.opcode() == opNOPIn && resp.itt() == reservedTag {
				continue // a target ping; discovery is short enough not to answer
			}
			break
		}
		if resp.opcode() == opReject {
			return nil, fmt.Errorf("%w: target rejected SendTargets (reason %#02x)", ErrProtocol, resp.bhs[2])
		}
		if resp.opcode() != opTextResp || resp.itt() != itt {
			return nil, fmt.Errorf("%w: SendTargets answered with %s", ErrProtocol, resp)
		}
		expStatSN = resp.u32(24) + 1
		answer = append(answer, resp.data...)
		if len(answer) > maxDiscoveryBytes {
			return nil, fmt.Errorf("%w: SendTargets answer over %d bytes", ErrProtocol, maxDiscoveryBytes)
		}
		final, cont := resp.flags()&flagFinal != 0, resp.flags()&0x40 != 0
		if final && !cont {
			break
		}
		ttt = resp.u32(20)
	}
	// Log out politely; the answer is already in hand.
	lo := &pdu{}
	lo.bhs[0] = flagImmed | opLogoutReq
	lo.bhs[1] = flagFinal
	lo.setITT(itt + 1)
	lo.put32(24, cmdSN)
	lo.put32(28, expStatSN)
	w.add(lo)
	nc.SetDeadline(time.Now().Add(time.Second))
	if w.flush(nc) == nil {
		r.read()
	}
	return parseSendTargets(answer)
}

// DiscoverURL is Discover with an iscsi:// URL.
func DiscoverURL(ctx context.Context, rawURL string) ([]DiscoveredTarget, error) {
	cfg, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return Discover(ctx, cfg)
}

func parseSendTargets(b []byte) ([]DiscoveredTarget, error) {
	kvs, err := parseText(b)
	if err != nil {
		return nil, err
	}
	var out []DiscoveredTarget
	for _, p := range kvs {
		switch p.k {
		case "TargetName":
			out = append(out, DiscoveredTarget{Name: p.v})
		case "TargetAddress":
			if len(out) == 0 {
				return nil, fmt.Errorf("%w: TargetAddress before any TargetName", ErrProtocol)
			}
			out[len(out)-1].Addresses = append(out[len(out)-1].Addresses, p.v)
		}
	}
	return out, nil
}
