package iscsi

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// SCSI status codes (SAM-5).
const (
	statusGood           = 0x00
	statusCheckCondition = 0x02
	statusBusy           = 0x08
	statusReservation    = 0x18
	statusTaskSetFull    = 0x28
)

// Sense keys.
const (
	SenseNoSense        = 0x0
	SenseRecovered      = 0x1
	SenseNotReady       = 0x2
	SenseMediumError    = 0x3
	SenseHardwareError  = 0x4
	SenseIllegalRequest = 0x5
	SenseUnitAttention  = 0x6
	SenseDataProtect    = 0x7
	SenseAbortedCommand = 0xb
)

// SCSIError is a command that completed with a status other than GOOD.
type SCSIError struct {
	Op       byte // the CDB's operation code
	Status   byte
	Response byte // iSCSI response code (0 = completed at target)
	SenseKey byte
	ASC      byte
	ASCQ     byte
}

func (e *SCSIError) Error() string {
	if e.Response != 0 {
		return fmt.Sprintf("iscsi: command %#02x: target failure (iSCSI response %#02x)", e.Op, e.Response)
	}
	if e.Status == statusCheckCondition {
		return fmt.Sprintf("iscsi: command %#02x: check condition, sense key %#x asc/ascq %02x/%02x", e.Op, e.SenseKey, e.ASC, e.ASCQ)
	}
	return fmt.Sprintf("iscsi: command %#02x: status %#02x", e.Op, e.Status)
}

// retryable: the command was not executed and may be sent again as is.
func (e *SCSIError) retryable() bool {
	switch {
	case e.Response != 0:
		return false
	case e.Status == statusBusy || e.Status == statusTaskSetFull:
		return true
	case e.Status == statusCheckCondition:
		return e.SenseKey == SenseUnitAttention ||
			(e.SenseKey == SenseNotReady && e.ASC == 0x04 && e.ASCQ == 0x01) // becoming ready
	}
	return false
}

// parseSense fills key/asc/ascq from fixed (0x70/0x71) or descriptor (0x72/0x73)
// sense data. Short or odd data leaves them zero.
func parseSense(e *SCSIError, s []byte) {
	if len(s) < 1 {
		return
	}
	switch s[0] & 0x7f {
	case 0x70, 0x71:
		if len(s) > 2 {
			e.SenseKey = s[2] & 0xf
		}
		if len(s) > 13 {
			e.ASC, e.ASCQ = s[12], s[13]
		}
	case 0x72, 0x73:
		if len(s) > 3 {
			e.SenseKey, e.ASC, e.ASCQ = s[1]&0xf, s[2], s[3]
		}
	}
}

// CDB builders.

func cdbTestUnitReady() []byte { return make([]byte, 6) }

func cdbInquiry(evpd bool, page byte, alloc uint16) []byte {
	c := make([]byte, 6)
	c[0] = 0x12
	if evpd {
		c[1] = 1
		c[2] = page
	}
	binary.BigEndian.PutUint16(c[3:5], alloc)
	return c
}

func cdbReadCapacity16() []byte {
	c := make([]byte, 16)
	c[0] = 0x9e
	c[1] = 0x10
	binary.BigEndian.PutUint32(c[10:14], 32)
	return c
}

func cdbRW16(op byte, lba uint64, blocks uint32, fua bool) []byte {
	c := make([]byte, 16)
	c[0] = op
	if fua {
		c[1] = 0x08
	}
	binary.BigEndian.PutUint64(c[2:10], lba)
	binary.BigEndian.PutUint32(c[10:14], blocks)
	return c
}

const (
	opRead16      = 0x88
	opWrite16     = 0x8a
	opSyncCache10 = 0x35
)

// cdbSyncCache10 covers the whole medium (LBA 0, 0 blocks).
func cdbSyncCache10() []byte {
	c := make([]byte, 10)
	c[0] = opSyncCache10
	return c
}

// Inquiry is the standard INQUIRY data plus the unit serial number and device
// identifiers when the target offers them.
type Inquiry struct {
	DeviceType byte   `json:"device_type"`
	Vendor     string `json:"vendor"`
	Product    string `json:"product"`
	Revision   string `json:"revision"`
	Serial     string `json:"serial,omitempty"`
	Version    byte   `json:"version"`
	CmdQue     bool   `json:"cmdque"`
}

func parseInquiry(b []byte) (Inquiry, error) {
	if len(b) < 36 {
		return Inquiry{}, fmt.Errorf("%w: INQUIRY data of %d bytes", ErrProtocol, len(b))
	}
	tr := func(x []byte) string { return strings.TrimSpace(strings.ToValidUTF8(string(x), "?")) }
	return Inquiry{
		DeviceType: b[0] & 0x1f,
		Version:    b[2],
		CmdQue:     b[7]&0x02 != 0,
		Vendor:     tr(b[8:16]),
		Product:    tr(b[16:32]),
		Revision:   tr(b[32:36]),
	}, nil
}

// Capacity is READ CAPACITY(16) data.
type Capacity struct {
	Blocks    uint64 `json:"blocks"`
	BlockSize uint32 `json:"block_size"`
}

func parseCapacity16(b []byte) (Capacity, error) {
	if len(b) < 12 {
		return Capacity{}, fmt.Errorf("%w: READ CAPACITY(16) data of %d bytes", ErrProtocol, len(b))
	}
	last := binary.BigEndian.Uint64(b[0:8])
	bs := binary.BigEndian.Uint32(b[8:12])
	if bs == 0 || bs > 1<<20 || bs&(bs-1) != 0 || last == ^uint64(0) {
		return Capacity{}, fmt.Errorf("%w: READ CAPACITY(16): block size %d, last LBA %d", ErrProtocol, bs, last)
	}
	return Capacity{Blocks: last + 1, BlockSize: bs}, nil
}
