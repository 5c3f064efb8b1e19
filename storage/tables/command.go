package tables

import (
	"encoding/binary"
	"errors"
	"fmt"

	"xedge/storage"
)

// CmdKind is what a Command does.
type CmdKind byte

const (
	// CmdApply applies a batch of ops (storage.Store.Apply).
	CmdApply CmdKind = 1
	// CmdDeclare creates a table or changes its copy type (storage.Store.Declare).
	CmdDeclare CmdKind = 2
	// CmdClear empties a table, keeping its spec.
	CmdClear CmdKind = 3
)

// Limits that keep a corrupt record from allocating without bound.
const (
	maxNameLen  = 255
	maxKeyLen   = 1 << 16
	maxValueLen = 64 << 20
	maxOps      = 1 << 20
	maxTables   = 1 << 16
)

// Command is one deterministic change to a State: what a log record or a raft
// log entry carries.
type Command struct {
	Kind CmdKind
	Spec storage.TableSpec // CmdDeclare, CmdClear (Name only)
	Ops  []storage.Op      // CmdApply
	// Marks, when not nil, has one entry per op: the copy type the proposing
	// node believed the op's table has (CmdApply only). The replicated store
	// marks every op so that the RAM ops of an entry can be removed before it
	// is written to a device without looking at any state (Redacted), and
	// State.ApplyWith refuses the whole batch if a mark disagrees with the
	// table's copy type at apply time (ErrCopyMismatch). nil: unmarked (the
	// single-node store), applied by the table's actual copy type.
	Marks []Mark
}

// Mark is the copy type an op was proposed for.
type Mark byte

const (
	// MarkDisc: the op writes a disc table.
	MarkDisc Mark = 1
	// MarkRAM: the op writes a RAM table.
	MarkRAM Mark = 2
	// MarkRedacted: a MarkRAM op whose key, value and condition were removed
	// before the entry was written to a device. It keeps its table so that
	// replaying the entry makes exactly the same table checks; it writes
	// nothing, and a node applying it knows its RAM tables are incomplete.
	MarkRedacted Mark = 3
)

// MarkFor returns the mark for a table of copy type c.
func MarkFor(c storage.CopyType) Mark {
	if c == storage.RAM {
		return MarkRAM
	}
	return MarkDisc
}

// HasRAM reports whether the command carries marked RAM ops with content.
func (c Command) HasRAM() bool {
	for _, m := range c.Marks {
		if m == MarkRAM {
			return true
		}
	}
	return false
}

// HasRedacted reports whether the command carries redacted RAM ops.
func (c Command) HasRedacted() bool {
	for _, m := range c.Marks {
		if m == MarkRedacted {
			return true
		}
	}
	return false
}

// Redacted returns the command with every MarkRAM op replaced by its
// redacted stub (same kind and table; no key, value or condition), and
// whether anything changed. It depends on the command alone, never on state.
func (c Command) Redacted() (Command, bool) {
	if c.Kind != CmdApply || !c.HasRAM() {
		return c, false
	}
	out := Command{Kind: c.Kind, Ops: make([]storage.Op, len(c.Ops)), Marks: make([]Mark, len(c.Marks))}
	copy(out.Ops, c.Ops)
	copy(out.Marks, c.Marks)
	for i, m := range out.Marks {
		if m == MarkRAM {
			out.Ops[i] = storage.Op{Kind: c.Ops[i].Kind, Table: c.Ops[i].Table}
			out.Marks[i] = MarkRedacted
		}
	}
	return out, true
}

// ApplyCommand returns the command for a batch.
func ApplyCommand(ops ...storage.Op) Command { return Command{Kind: CmdApply, Ops: ops} }

// DeclareCommand returns the command declaring a table.
func DeclareCommand(spec storage.TableSpec) Command {
	return Command{Kind: CmdDeclare, Spec: spec}
}

// Encoding (version 1):
//
//	kind(1) version(1)
//	CmdDeclare: uvarint len(name) name copy(1)
//	CmdClear:   uvarint len(name) name
//	CmdApply:   uvarint nops, then per op:
//	            kind(1) cond(1) uvarint len(table) table uvarint len(key) key
//	            uvarint len(value) value
//
// Version 2 is a CmdApply with Marks: per op, kind(1) cond(1) mark(1), then
// table, key and value as in version 1. A command has exactly one encoding:
// version 1 when Marks is nil, version 2 otherwise; a redacted op must have an
// empty key and value and no condition.
const (
	cmdVersion       = 1
	cmdVersionMarked = 2
)

// Encode appends the command's binary encoding to dst.
func (c Command) Encode(dst []byte) []byte {
	marked := c.Kind == CmdApply && c.Marks != nil
	if marked {
		dst = append(dst, byte(c.Kind), cmdVersionMarked)
	} else {
		dst = append(dst, byte(c.Kind), cmdVersion)
	}
	switch c.Kind {
	case CmdDeclare:
		dst = appendBytes(dst, []byte(c.Spec.Name))
		dst = append(dst, byte(c.Spec.Copy))
	case CmdClear:
		dst = appendBytes(dst, []byte(c.Spec.Name))
	case CmdApply:
		dst = binary.AppendUvarint(dst, uint64(len(c.Ops)))
		for i, op := range c.Ops {
			dst = append(dst, byte(op.Kind), byte(op.Cond))
			if marked {
				var m Mark
				if i < len(c.Marks) {
					m = c.Marks[i]
				}
				dst = append(dst, byte(m))
			}
			dst = appendBytes(dst, []byte(op.Table))
			dst = appendBytes(dst, []byte(op.Key))
			dst = appendBytes(dst, op.Value)
		}
	}
	return dst
}

// ErrBadCommand is wrapped by every DecodeCommand error.
var ErrBadCommand = errors.New("tables: bad command encoding")

// DecodeCommand decodes a command. Values in the result alias p.
func DecodeCommand(p []byte) (Command, error) {
	d := decoder{p: p}
	kind, ver := d.byte(), d.byte()
	if d.err != nil {
		return Command{}, fmt.Errorf("%w: %v", ErrBadCommand, d.err)
	}
	if ver != cmdVersion && !(ver == cmdVersionMarked && CmdKind(kind) == CmdApply) {
		return Command{}, fmt.Errorf("%w: version %d", ErrBadCommand, ver)
	}
	marked := ver == cmdVersionMarked
	c := Command{Kind: CmdKind(kind)}
	switch c.Kind {
	case CmdDeclare:
		c.Spec.Name = string(d.bytes(maxNameLen))
		c.Spec.Copy = storage.CopyType(d.byte())
		if c.Spec.Copy != storage.Disc && c.Spec.Copy != storage.RAM {
			return Command{}, fmt.Errorf("%w: copy type %d", ErrBadCommand, c.Spec.Copy)
		}
	case CmdClear:
		c.Spec.Name = string(d.bytes(maxNameLen))
	case CmdApply:
		n := d.uvarint()
		if n > maxOps {
			return Command{}, fmt.Errorf("%w: %d ops", ErrBadCommand, n)
		}
		c.Ops = make([]storage.Op, 0, n)
		if marked {
			c.Marks = make([]Mark, 0, n)
		}
		for i := uint64(0); i < n && d.err == nil; i++ {
			var op storage.Op
			op.Kind = storage.OpKind(d.byte())
			op.Cond = storage.CondKind(d.byte())
			var m Mark
			if marked {
				m = Mark(d.byte())
			}
			op.Table = string(d.bytes(maxNameLen))
			op.Key = string(d.bytes(maxKeyLen))
			op.Value = d.bytes(maxValueLen)
			if op.Kind > storage.OpDeletePrefix || op.Cond > storage.CondPresent {
				return Command{}, fmt.Errorf("%w: op kind %d cond %d", ErrBadCommand, op.Kind, op.Cond)
			}
			if marked {
				if m < MarkDisc || m > MarkRedacted {
					return Command{}, fmt.Errorf("%w: op mark %d", ErrBadCommand, m)
				}
				if m == MarkRedacted && (op.Cond != storage.CondNone || op.Key != "" || len(op.Value) != 0) {
					return Command{}, fmt.Errorf("%w: redacted op with content", ErrBadCommand)
				}
				c.Marks = append(c.Marks, m)
			}
			c.Ops = append(c.Ops, op)
		}
	default:
		return Command{}, fmt.Errorf("%w: kind %d", ErrBadCommand, kind)
	}
	if d.err != nil {
		return Command{}, fmt.Errorf("%w: %v", ErrBadCommand, d.err)
	}
	if len(d.p) != 0 {
		return Command{}, fmt.Errorf("%w: %d trailing bytes", ErrBadCommand, len(d.p))
	}
	return c, nil
}

func appendBytes(dst, p []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(p)))
	return append(dst, p...)
}

type decoder struct {
	p   []byte
	err error
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.p) < 1 {
		d.err = errors.New("short input")
		return 0
	}
	b := d.p[0]
	d.p = d.p[1:]
	return b
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Uvarint(d.p)
	if n <= 0 {
		d.err = errors.New("bad varint")
		return 0
	}
	// Only the shortest encoding is valid, so a command has exactly one byte form.
	var canon [binary.MaxVarintLen64]byte
	if binary.PutUvarint(canon[:], x) != n {
		d.err = errors.New("overlong varint")
		return 0
	}
	d.p = d.p[n:]
	return x
}

func (d *decoder) bytes(max uint64) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > max || n > uint64(len(d.p)) {
		d.err = fmt.Errorf("length %d over limit or input", n)
		return nil
	}
	b := d.p[:n:n]
	d.p = d.p[n:]
	return b
}

func putUvarint(buf []byte, x uint64) int { return binary.PutUvarint(buf, x) }

func readUvarint(r *crcReader) (uint64, error) { return binary.ReadUvarint(r) }
