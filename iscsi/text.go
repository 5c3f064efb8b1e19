package iscsi

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// kv is one key=value pair of a text or login data segment.
type kv struct{ k, v string }

// Limits on text segments (RFC 7143 §6.1: key names up to 63 bytes; values of
// most keys up to 255, a few up to 8192).
const (
	maxKeyLen   = 63
	maxValueLen = 8192
	maxTextKeys = 1024
)

// parseText splits a text data segment into its pairs: each "key=value" ends with
// a NUL (the last NUL may be missing; a PDU's padding may add NULs).
func parseText(b []byte) ([]kv, error) {
	var out []kv
	for len(b) > 0 {
		i := bytes.IndexByte(b, 0)
		var item []byte
		if i < 0 {
			item, b = b, nil
		} else {
			item, b = b[:i], b[i+1:]
		}
		if len(item) == 0 {
			continue // padding
		}
		eq := bytes.IndexByte(item, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("%w: text item %q has no key=value", ErrProtocol, clip(item))
		}
		if eq > maxKeyLen {
			return nil, fmt.Errorf("%w: text key of %d bytes", ErrProtocol, eq)
		}
		if len(item)-eq-1 > maxValueLen {
			return nil, fmt.Errorf("%w: text value of %d bytes", ErrProtocol, len(item)-eq-1)
		}
		if len(out) >= maxTextKeys {
			return nil, fmt.Errorf("%w: more than %d text keys", ErrProtocol, maxTextKeys)
		}
		out = append(out, kv{string(item[:eq]), string(item[eq+1:])})
	}
	return out, nil
}

func clip(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

func encodeText(kvs []kv) []byte {
	var b []byte
	for _, p := range kvs {
		b = append(b, p.k...)
		b = append(b, '=')
		b = append(b, p.v...)
		b = append(b, 0)
	}
	return b
}

// params are a session's operational parameters, as negotiated at login.
type params struct {
	HeaderDigest        bool
	DataDigest          bool
	MaxRecvDSL          int // what we accept in one PDU (declared by us)
	TargetMaxRecvDSL    int // what the target accepts in one PDU (declared by it)
	MaxBurstLength      int
	FirstBurstLength    int
	MaxOutstandingR2T   int
	InitialR2T          bool
	ImmediateData       bool
	DataPDUInOrder      bool
	DataSequenceInOrder bool
	ErrorRecoveryLevel  int
	DefaultTime2Wait    int
	DefaultTime2Retain  int
	MaxConnections      int
}

// defaultParams are RFC 7143's defaults: what holds for a key nobody negotiated.
func defaultParams() params {
	return params{
		MaxRecvDSL:          8192,
		TargetMaxRecvDSL:    8192,
		MaxBurstLength:      262144,
		FirstBurstLength:    65536,
		MaxOutstandingR2T:   1,
		InitialR2T:          true,
		ImmediateData:       true,
		DataPDUInOrder:      true,
		DataSequenceInOrder: true,
		DefaultTime2Wait:    2,
		DefaultTime2Retain:  20,
		MaxConnections:      1,
	}
}

// negotiation holds our offer for the operational keys and folds in the target's
// answers and proposals (RFC 7143 §6.2 and §13).
type negotiation struct {
	offer   map[string]string
	order   []string
	result  params
	replied map[string]bool // keys the target answered
}

func yesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

// newNegotiation builds our offer from the configuration.
func newNegotiation(c *Config, discovery bool) *negotiation {
	n := &negotiation{offer: map[string]string{}, result: defaultParams(), replied: map[string]bool{}}
	add := func(k, v string) { n.offer[k] = v; n.order = append(n.order, k) }
	dg := func(on bool) string {
		if on {
			return "CRC32C"
		}
		return "None"
	}
	add("HeaderDigest", dg(c.HeaderDigest))
	add("DataDigest", dg(c.DataDigest))
	add("MaxRecvDataSegmentLength", strconv.Itoa(c.MaxRecvDataSegmentLength))
	n.result.MaxRecvDSL = c.MaxRecvDataSegmentLength
	if discovery {
		return n
	}
	add("MaxConnections", "1")
	add("InitialR2T", yesNo(c.InitialR2T))
	add("ImmediateData", yesNo(!c.NoImmediateData))
	add("MaxBurstLength", strconv.Itoa(c.MaxBurstLength))
	add("FirstBurstLength", strconv.Itoa(c.FirstBurstLength))
	add("MaxOutstandingR2T", strconv.Itoa(c.MaxOutstandingR2T))
	add("DefaultTime2Wait", "0")
	add("DefaultTime2Retain", "0")
	add("DataPDUInOrder", "Yes")
	add("DataSequenceInOrder", "Yes")
	add("ErrorRecoveryLevel", "0")
	return n
}

func (n *negotiation) keys() []kv {
	out := make([]kv, 0, len(n.order))
	for _, k := range n.order {
		out = append(out, kv{k, n.offer[k]})
	}
	return out
}

// informational keys a target may send during login that need no answer.
var loginInfoKeys = map[string]bool{
	"TargetAlias": true, "TargetPortalGroupTag": true, "TargetAddress": true,
	"AuthMethod": true, "InitiatorAlias": true, "TargetName": true,
}

func parseNum(k, v string, lo, hi int) (int, error) {
	x, err := strconv.Atoi(v)
	if err != nil || x < lo || x > hi {
		return 0, fmt.Errorf("%w: %s=%q is not a number in [%d, %d]", ErrProtocol, k, clip([]byte(v)), lo, hi)
	}
	return x, nil
}

func parseBool(k, v string) (bool, error) {
	switch v {
	case "Yes":
		return true, nil
	case "No":
		return false, nil
	}
	return false, fmt.Errorf("%w: %s=%q is not Yes or No", ErrProtocol, k, clip([]byte(v)))
}

func special(v string) bool {
	return v == "Reject" || v == "Irrelevant" || v == "NotUnderstood"
}

// handle folds in a PDU's worth of the target's keys and returns our replies to
// keys the target proposed (rather than answered).
func (n *negotiation) handle(kvs []kv) ([]kv, error) {
	var reply []kv
	for _, p := range kvs {
		k, v := p.k, p.v
		_, offered := n.offer[k]
		answer := offered && !n.replied[k]
		if answer {
			n.replied[k] = true
		}
		if special(v) {
			// The target refused or ignored our offer: the RFC default stands.
			continue
		}
		r := &n.result
		var err error
		switch k {
		case "HeaderDigest", "DataDigest":
			var on bool
			switch {
			case answer:
				// The answer must be one of the values we offered.
				if v != n.offer[k] && v != "None" {
					return nil, fmt.Errorf("%w: %s=%s was not offered (%s)", ErrProtocol, k, v, n.offer[k])
				}
				on = v == "CRC32C"
			default:
				// The target proposes a list: we pick the first we take.
				ours := n.offer[k]
				if ours == "" {
					ours = "None"
				}
				pick := ""
				for _, c := range strings.Split(v, ",") {
					if c == ours {
						pick = c
						break
					}
				}
				if pick == "" {
					reply = append(reply, kv{k, "Reject"})
					continue
				}
				reply = append(reply, kv{k, pick})
				on = pick == "CRC32C"
			}
			if k == "HeaderDigest" {
				r.HeaderDigest = on
			} else {
				r.DataDigest = on
			}
		case "MaxRecvDataSegmentLength":
			// Declarative: the target's own receive limit.
			r.TargetMaxRecvDSL, err = parseNum(k, v, 512, 1<<24-1)
		case "MaxBurstLength", "FirstBurstLength", "MaxOutstandingR2T", "DefaultTime2Retain", "ErrorRecoveryLevel", "MaxConnections":
			lo, hi := 512, 1<<24-1
			switch k {
			case "MaxOutstandingR2T", "MaxConnections":
				lo, hi = 1, 65535
			case "DefaultTime2Retain":
				lo, hi = 0, 3600
			case "ErrorRecoveryLevel":
				lo, hi = 0, 2
			}
			var x int
			if x, err = parseNum(k, v, lo, hi); err != nil {
				break
			}
			ours, _ := strconv.Atoi(n.offer[k])
			if !offered {
				ours = x
			}
			x = min(x, ours) // the result function is min()
			if !answer {
				reply = append(reply, kv{k, strconv.Itoa(x)})
			}
			switch k {
			case "MaxBurstLength":
				r.MaxBurstLength = x
			case "FirstBurstLength":
				r.FirstBurstLength = x
			case "MaxOutstandingR2T":
				r.MaxOutstandingR2T = x
			case "DefaultTime2Retain":
				r.DefaultTime2Retain = x
			case "ErrorRecoveryLevel":
				r.ErrorRecoveryLevel = x
			case "MaxConnections":
				r.MaxConnections = x
			}
		case "DefaultTime2Wait":
			var x int
			if x, err = parseNum(k, v, 0, 3600); err != nil {
				break
			}
			if !answer {
				x = max(x, 0)
				reply = append(reply, kv{k, strconv.Itoa(x)})
			}
			r.DefaultTime2Wait = x
		case "InitialR2T", "DataPDUInOrder", "DataSequenceInOrder":
			// Result function OR.
			var b bool
			if b, err = parseBool(k, v); err != nil {
				break
			}
			ours := n.offer[k] == "Yes"
			if !offered {
				ours = k != "InitialR2T" // we would want No for InitialR2T
			}
			b = b || ours
			if !answer {
				reply = append(reply, kv{k, yesNo(b)})
			}
			switch k {
			case "InitialR2T":
				r.InitialR2T = b
			case "DataPDUInOrder":
				r.DataPDUInOrder = b
			case "DataSequenceInOrder":
				r.DataSequenceInOrder = b
			}
		case "ImmediateData":
			// Result function AND.
			var b bool
			if b, err = parseBool(k, v); err != nil {
				break
			}
			ours := !offered || n.offer[k] == "Yes"
			b = b && ours
			if !answer {
				reply = append(reply, kv{k, yesNo(b)})
			}
			r.ImmediateData = b
		default:
			if !loginInfoKeys[k] && !offered {
				reply = append(reply, kv{k, "NotUnderstood"})
			}
		}
		if err != nil {
			return nil, err
		}
	}
	return reply, nil
}

// done returns the final parameters, checked for consistency.
func (n *negotiation) done() (params, error) {
	r := n.result
	if r.FirstBurstLength > r.MaxBurstLength {
		r.FirstBurstLength = r.MaxBurstLength
	}
	if r.ErrorRecoveryLevel != 0 {
		return r, fmt.Errorf("%w: ErrorRecoveryLevel=%d (only 0 is supported)", ErrProtocol, r.ErrorRecoveryLevel)
	}
	if !r.DataPDUInOrder || !r.DataSequenceInOrder {
		return r, fmt.Errorf("%w: out-of-order data was negotiated", ErrProtocol)
	}
	return r, nil
}
