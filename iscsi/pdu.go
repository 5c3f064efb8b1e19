package iscsi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
)

// Opcodes (RFC 7143 §11.2.1.2).
const (
	opNOPOut      = 0x00
	opSCSICmd     = 0x01
	opTaskMgmt    = 0x02
	opLoginReq    = 0x03
	opTextReq     = 0x04
	opDataOut     = 0x05
	opLogoutReq   = 0x06
	opSNACK       = 0x10
	opNOPIn       = 0x20
	opSCSIResp    = 0x21
	opTaskMgmtRsp = 0x22
	opLoginResp   = 0x23
	opTextResp    = 0x24
	opDataIn      = 0x25
	opLogoutResp  = 0x26
	opR2T         = 0x31
	opAsync       = 0x32
	opReject      = 0x3f
)

const (
	bhsLen       = 48
	flagFinal    = 0x80
	flagImmed    = 0x40
	reservedTag  = 0xffffffff
	maxAHSBytes  = 1020 // TotalAHSLength is one byte of 4-byte words
	loginMaxData = 8192 // login PDUs never carry more (RFC 7143 §6.1)
)

// ErrProtocol reports a PDU the target should never have sent: a length out of
// bounds, an unknown task tag, a bad digest, an offset outside a buffer. The
// connection it came on is dropped.
var ErrProtocol = errors.New("iscsi: protocol violation")

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// crc32c is the iSCSI digest: CRC32C, sent least significant byte first.
func crc32c(parts ...[]byte) uint32 {
	var c uint32
	for _, p := range parts {
		c = crc32.Update(c, crcTable, p)
	}
	return c
}

// pdu is one iSCSI PDU: the 48-byte basic header segment, any additional header
// segments, and the data segment (unpadded).
type pdu struct {
	bhs  [bhsLen]byte
	ahs  []byte
	data []byte
}

func (p *pdu) opcode() byte       { return p.bhs[0] & 0x3f }
func (p *pdu) flags() byte        { return p.bhs[1] }
func (p *pdu) itt() uint32        { return binary.BigEndian.Uint32(p.bhs[16:20]) }
func (p *pdu) setITT(v uint32)    { binary.BigEndian.PutUint32(p.bhs[16:20], v) }
func (p *pdu) u32(off int) uint32 { return binary.BigEndian.Uint32(p.bhs[off : off+4]) }
func (p *pdu) put32(off int, v uint32) {
	binary.BigEndian.PutUint32(p.bhs[off:off+4], v)
}
func (p *pdu) put64(off int, v uint64) {
	binary.BigEndian.PutUint64(p.bhs[off:off+8], v)
}

// dataSegmentLength is the 24-bit field at bytes 5..7.
func (p *pdu) dataSegmentLength() int {
	return int(p.bhs[5])<<16 | int(p.bhs[6])<<8 | int(p.bhs[7])
}

func (p *pdu) setLengths() {
	n := len(p.data)
	p.bhs[4] = byte(len(p.ahs) / 4)
	p.bhs[5], p.bhs[6], p.bhs[7] = byte(n>>16), byte(n>>8), byte(n)
}

func (p *pdu) String() string {
	return fmt.Sprintf("pdu{op=%#02x flags=%#02x itt=%#x dlen=%d}", p.opcode(), p.flags(), p.itt(), len(p.data))
}

func pad4(n int) int { return (4 - n&3) & 3 }

var zeroPad [4]byte

// digests says which digests are on for a connection.
type digests struct{ header, data bool }

// pduReader reads PDUs from a connection, checking lengths against its limits
// and digests when they are on. Its data buffer is reused: a PDU's data is valid
// only until the next read.
type pduReader struct {
	r       io.Reader
	dg      digests
	maxData int // the MaxRecvDataSegmentLength we declared
	buf     []byte
	hdr     [bhsLen + maxAHSBytes + 4]byte
}

func newPDUReader(r io.Reader, maxData int) *pduReader {
	return &pduReader{r: r, maxData: maxData}
}

// read returns the next PDU. Errors other than io errors wrap ErrProtocol.
func (pr *pduReader) read() (*pdu, error) {
	p := &pdu{}
	if err := pr.readInto(p); err != nil {
		return nil, err
	}
	return p, nil
}

func (pr *pduReader) readInto(p *pdu) error {
	if _, err := io.ReadFull(pr.r, p.bhs[:]); err != nil {
		return err
	}
	ahsLen := int(p.bhs[4]) * 4
	dlen := p.dataSegmentLength()
	if dlen > pr.maxData {
		return fmt.Errorf("%w: data segment of %d bytes exceeds the %d we accept (%s)", ErrProtocol, dlen, pr.maxData, p)
	}
	hlen := ahsLen
	if pr.dg.header {
		hlen += 4
	}
	if hlen > 0 {
		if _, err := io.ReadFull(pr.r, pr.hdr[:hlen]); err != nil {
			return err
		}
		if ahsLen > 0 {
			p.ahs = append([]byte(nil), pr.hdr[:ahsLen]...)
		}
		if pr.dg.header {
			want := binary.LittleEndian.Uint32(pr.hdr[ahsLen:hlen])
			if got := crc32c(p.bhs[:], pr.hdr[:ahsLen]); got != want {
				return fmt.Errorf("%w: header digest %#08x, computed %#08x", ErrProtocol, want, got)
			}
		}
	}
	if dlen == 0 {
		p.data = nil
		return nil
	}
	total := dlen + pad4(dlen)
	if pr.dg.data {
		total += 4
	}
	if cap(pr.buf) < total {
		pr.buf = make([]byte, total)
	}
	b := pr.buf[:total]
	if _, err := io.ReadFull(pr.r, b); err != nil {
		return err
	}
	if pr.dg.data {
		padded := dlen + pad4(dlen)
		want := binary.LittleEndian.Uint32(b[padded:])
		if got := crc32c(b[:padded]); got != want {
			return fmt.Errorf("%w: data digest %#08x, computed %#08x", ErrProtocol, want, got)
		}
	}
	p.data = b[:dlen]
	return nil
}

// pduWriter frames PDUs into one vectored write per batch.
type pduWriter struct {
	dg   digests
	bufs net.Buffers
}

// add appends p to the batch. p.data is referenced, not copied, until flush.
func (pw *pduWriter) add(p *pdu) {
	p.setLengths()
	hdr := make([]byte, 0, bhsLen+len(p.ahs)+4)
	hdr = append(hdr, p.bhs[:]...)
	hdr = append(hdr, p.ahs...)
	if pw.dg.header {
		hdr = binary.LittleEndian.AppendUint32(hdr, crc32c(hdr))
	}
	pw.bufs = append(pw.bufs, hdr)
	if len(p.data) == 0 {
		return
	}
	pw.bufs = append(pw.bufs, p.data)
	pad := pad4(len(p.data))
	if pad > 0 {
		pw.bufs = append(pw.bufs, zeroPad[:pad])
	}
	if pw.dg.data {
		d := binary.LittleEndian.AppendUint32(nil, crc32c(p.data, zeroPad[:pad]))
		pw.bufs = append(pw.bufs, d)
	}
}

// flush writes the batch to w.
func (pw *pduWriter) flush(w io.Writer) error {
	bufs := pw.bufs // WriteTo consumes its receiver: hand it a copy of the header
	_, err := bufs.WriteTo(w)
	clear(pw.bufs) // drop references to caller data
	pw.bufs = pw.bufs[:0]
	return err
}

// serial number arithmetic (RFC 1982, 32 bits) for CmdSN, StatSN and friends.
func snLess(a, b uint32) bool   { return a != b && int32(a-b) < 0 }
func snLessEq(a, b uint32) bool { return a == b || int32(a-b) < 0 }
