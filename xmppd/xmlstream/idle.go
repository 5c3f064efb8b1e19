package xmlstream

import "sync"

// Idle-stream memory: a server holding many quiet streams need not keep a read buffer
// and per-stanza scratch for each of them. A caller that can wait for input without
// the decoder (for example by polling the socket for readability) calls
// ReleaseBuffers while the decoder is Idle, waits, then calls Reacquire before the
// next Next or StreamHeader.

// bufPool holds released input buffers of initBufSize bytes.
var bufPool = sync.Pool{New: func() any { b := make([]byte, initBufSize); return &b }}

// Idle reports whether the decoder holds no unconsumed input and is between
// top-level elements: the next Next would start by reading. Whitespace keepalives
// already read are consumed by Next, so a decoder is Idle again right after them.
func (d *Decoder) Idle() bool {
	return d.r == d.w && !d.inStanza && d.rerr == nil && d.err == nil
}

// ReleaseBuffers gives the input buffer back to a shared pool and drops the scratch
// space of the last stanza if the decoder is Idle, and reports whether it did.
// After it returns true, Reacquire must be called before the next Next or
// StreamHeader.
func (d *Decoder) ReleaseBuffers() bool {
	if !d.Idle() || d.buf == nil {
		return false
	}
	d.base += int64(d.r)
	d.r, d.w = 0, 0
	if cap(d.buf) == initBufSize {
		b := d.buf[:initBufSize]
		bufPool.Put(&b)
	}
	d.buf = nil
	d.attrs, d.open, d.nodes, d.text = nil, nil, nil, nil
	return true
}

// Reacquire gives the decoder an input buffer again after ReleaseBuffers; it does
// nothing if the decoder has one.
func (d *Decoder) Reacquire() {
	if d.buf != nil {
		return
	}
	bp := bufPool.Get().(*[]byte)
	d.buf = (*bp)[:initBufSize]
}
