package xmlstream

import (
	"errors"
	"io"
	"strings"
	"testing"
)

var errParked = errors.New("parked")

// parkingReader mimics c2s: when the decoder is Idle it returns errParked instead of
// blocking; the caller then releases the decoder's buffers, "waits", reacquires them
// and calls Next again.
type parkingReader struct {
	d     *Decoder
	r     io.Reader
	woke  bool
	parks int
}

func (p *parkingReader) Read(b []byte) (int, error) {
	if !p.woke && p.d.Idle() {
		p.parks++
		return 0, errParked
	}
	p.woke = false
	return p.r.Read(b)
}

func TestIdleReleaseAndReacquire(t *testing.T) {
	for i, in := range chunkCorpus {
		want, _, _ := decodeAll(strings.NewReader(in), DefaultLimits())
		pr := &parkingReader{r: &chunkReader{s: in, rng: newRand(int64(i)), max: 7}}
		d := NewDecoder(pr, DefaultLimits())
		pr.d = d
		var got result
		park := func(err error) bool {
			if !errors.Is(err, errParked) {
				return false
			}
			off := d.InputOffset()
			if !d.ReleaseBuffers() || d.buf != nil || !d.Idle() {
				t.Fatalf("input %d: ReleaseBuffers on an idle decoder failed", i)
			}
			if d.InputOffset() != off {
				t.Fatalf("input %d: InputOffset changed from %d to %d", i, off, d.InputOffset())
			}
			d.Reacquire()
			pr.woke = true
			return true
		}
		h, err := d.StreamHeader()
		for park(err) {
			h, err = d.StreamHeader()
		}
		if err != nil {
			got.err = errString(err)
		} else {
			got.header = dump(h)
			for n := 0; n < 100000; n++ {
				e, err := d.Next()
				if park(err) {
					continue
				}
				if err != nil {
					got.err = errString(err)
					break
				}
				got.elems = append(got.elems, dump(e))
			}
		}
		if got.String() != want.String() {
			t.Errorf("input %d with parking:\n%s\nwant:\n%s", i, got, want)
		}
		if pr.parks == 0 {
			t.Errorf("input %d: never parked", i)
		}
	}
	// Not idle in the middle of a stanza: nothing is released.
	d := NewDecoder(strings.NewReader(testHeader+"<message><body>half"), DefaultLimits())
	if _, err := d.StreamHeader(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Next(); err == nil {
		t.Fatal("truncated stanza decoded")
	}
	if d.Idle() || d.ReleaseBuffers() {
		t.Error("released buffers in the middle of a stanza")
	}
}
