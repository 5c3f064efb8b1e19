package server

import (
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"xedge/xmppd/xmlstream"
)

// A room's message is never delivered as the stanza routed to the room (the room
// sends copies), so a sample of it waited until 512 had piled up and the map was
// cleared, and every delivery meanwhile looked it up (~2% of xmppd's CPU in the
// MUC fan-out). Groupchat messages are not sampled; chat messages still are, and
// their samples end at delivery.
func TestRoutingSamplesSkipGroupchat(t *testing.T) {
	f := &opsFeature{routing: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "routing"})}
	for i := range f.in {
		f.in[i] = prometheus.NewCounter(prometheus.CounterOpts{Name: "in"})
		f.out[i] = prometheus.NewCounter(prometheus.CounterOpts{Name: "out"})
	}
	msg := func(typ string, i int) *xmlstream.Element {
		return xmlstream.New(xmlstream.NSClient, "message", "type", typ, "id", strconv.Itoa(i))
	}
	for i := range 4 * routingSample {
		f.received(msg("groupchat", i))
	}
	if n := f.inflightN.Load(); n != 0 {
		t.Fatalf("%d groupchat messages sampled", n)
	}
	var chats []*xmlstream.Element
	for i := range 2 * routingSample {
		st := msg("chat", i)
		chats = append(chats, st)
		f.received(st)
	}
	if n := f.inflightN.Load(); n != 2 {
		t.Fatalf("%d of %d chat messages sampled, want 2", n, len(chats))
	}
	for _, st := range chats {
		f.delivered(st)
	}
	var m dto.Metric
	if err := f.routing.Write(&m); err != nil {
		t.Fatal(err)
	}
	if n, c := f.inflightN.Load(), m.GetHistogram().GetSampleCount(); n != 0 || c != 2 {
		t.Fatalf("after delivery: %d samples waiting, %d timed; want 0 and 2", n, c)
	}
}
