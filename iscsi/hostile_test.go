package iscsi

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"
)

// A hostile or broken target must never crash or hang the initiator: every
// misbehaviour ends in an error, within the task timeout.
func TestHostileTarget(t *testing.T) {
	dataIn := func(fc *fakeConn, cmd *pdu, mut func(d *pdu)) {
		d := &pdu{}
		d.bhs[0], d.bhs[1] = opDataIn, flagFinal|0x01
		d.setITT(cmd.itt())
		d.put32(20, reservedTag)
		d.data = make([]byte, 512)
		fc.stamp(d, true)
		mut(d)
		fc.send(d)
	}
	r2t := func(fc *fakeConn, cmd *pdu, sn, off, n uint32) {
		r := &pdu{}
		r.bhs[0], r.bhs[1] = opR2T, flagFinal
		r.setITT(cmd.itt())
		r.put32(20, 0x77)
		r.put32(36, sn)
		r.put32(40, off)
		r.put32(44, n)
		fc.send(fc.stamp(r, false))
	}
	raw := func(fc *fakeConn, b []byte) { fc.nc.Write(b) }

	cases := []struct {
		name  string
		write bool // the operation is a write (else a read)
		hook  func(fc *fakeConn, cmd *pdu)
	}{
		{"silence", false, func(fc *fakeConn, cmd *pdu) {}},
		{"data segment over our limit", false, func(fc *fakeConn, cmd *pdu) {
			b := make([]byte, bhsLen)
			b[0] = opDataIn
			b[5], b[6], b[7] = 0xff, 0xff, 0xff // 16 MiB - 1
			binary.BigEndian.PutUint32(b[16:], cmd.itt())
			raw(fc, b)
		}},
		{"data-in for an unknown tag", false, func(fc *fakeConn, cmd *pdu) {
			dataIn(fc, cmd, func(d *pdu) { d.setITT(cmd.itt() + 1000) })
		}},
		{"response for an unknown tag", true, func(fc *fakeConn, cmd *pdu) {
			r := &pdu{}
			r.bhs[0], r.bhs[1] = opSCSIResp, flagFinal
			r.setITT(0xdead)
			fc.send(fc.stamp(r, true))
		}},
		{"data-in past the buffer", false, func(fc *fakeConn, cmd *pdu) {
			dataIn(fc, cmd, func(d *pdu) { d.data = make([]byte, 8192) })
		}},
		{"data-in at a wild offset", false, func(fc *fakeConn, cmd *pdu) {
			dataIn(fc, cmd, func(d *pdu) { d.put32(40, 0xfffffe00) })
		}},
		{"data-in with a wrong DataSN", false, func(fc *fakeConn, cmd *pdu) {
			dataIn(fc, cmd, func(d *pdu) { d.put32(36, 5) })
		}},
		{"short read without residual", false, func(fc *fakeConn, cmd *pdu) {
			dataIn(fc, cmd, func(d *pdu) { d.data = d.data[:100] })
		}},
		{"residual larger than the read", false, func(fc *fakeConn, cmd *pdu) {
			dataIn(fc, cmd, func(d *pdu) { d.bhs[1] |= 0x02; d.put32(44, 1<<30) })
		}},
		{"data-in for a write", true, func(fc *fakeConn, cmd *pdu) {
			dataIn(fc, cmd, func(d *pdu) {})
		}},
		{"sense longer than the segment", false, func(fc *fakeConn, cmd *pdu) {
			r := &pdu{}
			r.bhs[0], r.bhs[1], r.bhs[3] = opSCSIResp, flagFinal, statusCheckCondition
			r.setITT(cmd.itt())
			r.data = []byte{0xff, 0xff, 0x70}
			fc.send(fc.stamp(r, true))
		}},
		{"endless R2Ts at one offset", true, func(fc *fakeConn, cmd *pdu) {
			for i := uint32(0); i < 100000; i++ {
				r2t(fc, cmd, i, 0, 512)
			}
		}},
		{"endless R2Ts past the end", true, func(fc *fakeConn, cmd *pdu) {
			for i := uint32(0); i < 100000; i++ {
				r2t(fc, cmd, i, i*512, 512)
			}
		}},
		{"R2T for a huge burst", true, func(fc *fakeConn, cmd *pdu) { r2t(fc, cmd, 0, 0, 1<<30) }},
		{"R2T with a wrong R2TSN", true, func(fc *fakeConn, cmd *pdu) { r2t(fc, cmd, 9, 0, 512) }},
		{"R2T for a read", false, func(fc *fakeConn, cmd *pdu) { r2t(fc, cmd, 0, 0, 512) }},
		{"unknown opcode", false, func(fc *fakeConn, cmd *pdu) {
			b := make([]byte, bhsLen)
			b[0] = 0x3a
			raw(fc, b)
		}},
		{"initiator opcode from the target", false, func(fc *fakeConn, cmd *pdu) {
			b := make([]byte, bhsLen)
			b[0] = opSCSICmd
			raw(fc, b)
		}},
		{"garbage", false, func(fc *fakeConn, cmd *pdu) {
			raw(fc, []byte("HTTP/1.1 400 Bad Request\r\n\r\nthis is not iSCSI at all, not even close!!"))
		}},
		{"truncated header then silence", false, func(fc *fakeConn, cmd *pdu) { raw(fc, make([]byte, 20)) }},
		{"reject with a short header", false, func(fc *fakeConn, cmd *pdu) {
			r := &pdu{}
			r.bhs[0], r.bhs[1] = opReject, flagFinal
			r.setITT(reservedTag)
			r.data = make([]byte, 12)
			fc.send(fc.stamp(r, true))
		}},
		{"target requests logout", false, func(fc *fakeConn, cmd *pdu) {
			r := &pdu{}
			r.bhs[0], r.bhs[1], r.bhs[36] = opAsync, flagFinal, 1
			r.setITT(reservedTag)
			fc.send(fc.stamp(r, false))
		}},
		{"CmdSN window shut", false, func(fc *fakeConn, cmd *pdu) {
			// Answer nothing and close the window: the next commands must time out.
			n := &pdu{}
			n.bhs[0], n.bhs[1] = opNOPIn, flagFinal
			n.setITT(reservedTag)
			n.put32(20, reservedTag)
			fc.stamp(n, false)
			n.put32(32, cmd.u32(24)) // MaxCmdSN = this command
			fc.send(n)
		}},
		{"flood of target pings", false, func(fc *fakeConn, cmd *pdu) {
			for i := 0; i < 5000; i++ {
				n := &pdu{}
				n.bhs[0], n.bhs[1] = opNOPIn, flagFinal
				n.setITT(reservedTag)
				n.put32(20, uint32(i))
				if fc.send(fc.stamp(n, false)) != nil {
					return
				}
			}
		}},
		{"NOP-In answer to a ping never sent", false, func(fc *fakeConn, cmd *pdu) {
			n := &pdu{}
			n.bhs[0], n.bhs[1] = opNOPIn, flagFinal
			n.setITT(0x4242)
			n.put32(20, reservedTag)
			fc.send(fc.stamp(n, true))
		}},
		{"check condition", true, func(fc *fakeConn, cmd *pdu) {
			fc.respond(cmd, statusCheckCondition, []byte{0x70, 0, SenseMediumError, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x0c, 0})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Writes go by R2T only, so hostile R2Ts meet a write that wants them.
			ft := newFakeTarget(t, func(ft *fakeTarget) { ft.initialR2T, ft.immediateData = true, false })
			cfg := ft.config()
			cfg.MaxTransfer = 4096
			d := dialFake(t, cfg)
			ft.setHook(func(fc *fakeConn, cmd *pdu) bool {
				go tc.hook(fc, cmd)
				return true
			})
			start := time.Now()
			done := make(chan error, 1)
			go func() {
				var err error
				if tc.write {
					_, err = d.WriteAt(make([]byte, 4096), 0)
				} else {
					_, err = d.ReadAt(make([]byte, 512), 0)
				}
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("no error")
				}
				t.Logf("%v after %v", err, time.Since(start).Round(time.Millisecond))
			case <-time.After(6 * time.Second):
				t.Fatal("the operation hung")
			}
			ft.setHook(nil)
			// The device recovers once the target behaves.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for {
				if err := d.WaitConnected(ctx); err != nil {
					t.Fatalf("no recovery: %v", err)
				}
				if _, err := d.ReadAt(make([]byte, 512), 0); err == nil {
					break
				} else if ctx.Err() != nil {
					t.Fatalf("no recovery: %v", err)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// Login against servers that answer nonsense or nothing.
func TestHostileLogin(t *testing.T) {
	cases := []struct {
		name  string
		serve func(c net.Conn)
	}{
		{"silence", func(c net.Conn) { time.Sleep(5 * time.Second) }},
		{"close", func(c net.Conn) {}},
		{"garbage", func(c net.Conn) { c.Write(make([]byte, 4096)) }},
		{"oversized login response", func(c net.Conn) {
			b := make([]byte, bhsLen)
			b[0] = opLoginResp
			b[5], b[6], b[7] = 0x01, 0, 0
			c.Write(b)
		}},
		{"endless login rounds", func(c net.Conn) {
			r := newPDUReader(c, 1<<20)
			for i := 0; i < 100; i++ {
				p, err := r.read()
				if err != nil {
					return
				}
				resp := &pdu{}
				resp.bhs[0], resp.bhs[1] = opLoginResp, stageOperational<<2 // never transit
				resp.setITT(p.itt())
				resp.data = encodeText([]kv{{"MaxBurstLength", "4096"}})
				var w pduWriter
				w.add(resp)
				if w.flush(c) != nil {
					return
				}
			}
		}},
		{"auth failure", func(c net.Conn) {
			r := newPDUReader(c, 1<<20)
			p, err := r.read()
			if err != nil {
				return
			}
			resp := &pdu{}
			resp.bhs[0] = opLoginResp
			resp.bhs[36], resp.bhs[37] = 2, 1
			resp.setITT(p.itt())
			var w pduWriter
			w.add(resp)
			w.flush(c)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() { tc.serve(c); c.Close() }()
				}
			}()
			cfg := Config{Portal: ln.Addr().String(), Target: "iqn.x", TaskTimeout: 300 * time.Millisecond, Logger: quietLogger()}
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err = Dial(ctx, cfg)
			if err == nil {
				t.Fatal("login succeeded")
			}
			if el := time.Since(start); el > 2*time.Second {
				t.Fatalf("login failed only after %v: %v", el, err)
			}
			if tc.name == "auth failure" && !errors.Is(err, ErrAuth) {
				t.Fatalf("%v, want ErrAuth", err)
			}
			if _, err := Discover(ctx, cfg); err == nil {
				t.Fatal("discovery succeeded")
			}
		})
	}
}
