package roster

import "testing"

func ap(s State) State { s.Approved = true; return s }

// The rows of RFC 6121 Appendix A.2 (outbound) and A.3 (inbound), state by state.
func TestOutboundTable(t *testing.T) {
	N, NO, NI, NOI := State{Sub: SubNone}, State{Sub: SubNone, Ask: true}, State{Sub: SubNone, PendIn: true}, State{Sub: SubNone, Ask: true, PendIn: true}
	To, TI, F, FO, B := State{Sub: SubTo}, State{Sub: SubTo, PendIn: true}, State{Sub: SubFrom}, State{Sub: SubFrom, Ask: true}, State{Sub: SubBoth}
	cases := []struct {
		typ      string
		in, want State
	}{
		// A.2.1 subscribe
		{"subscribe", N, NO}, {"subscribe", NO, NO}, {"subscribe", NI, NOI}, {"subscribe", NOI, NOI},
		{"subscribe", To, To}, {"subscribe", TI, TI}, {"subscribe", F, FO}, {"subscribe", FO, FO}, {"subscribe", B, B},
		// A.2.2 subscribed
		// (with pre-approval, RFC 6121 §3.4, for None, None+PendingOut and To)
		{"subscribed", N, ap(N)}, {"subscribed", NO, ap(NO)}, {"subscribed", NI, F}, {"subscribed", NOI, FO},
		{"subscribed", To, ap(To)}, {"subscribed", TI, B}, {"subscribed", F, F}, {"subscribed", FO, FO}, {"subscribed", B, B},
		{"subscribed", ap(N), ap(N)},
		// A.2.3 unsubscribe
		{"unsubscribe", N, N}, {"unsubscribe", NO, N}, {"unsubscribe", NI, NI}, {"unsubscribe", NOI, NI},
		{"unsubscribe", To, N}, {"unsubscribe", TI, NI}, {"unsubscribe", F, F}, {"unsubscribe", FO, F}, {"unsubscribe", B, F},
		// A.2.4 unsubscribed
		{"unsubscribed", N, N}, {"unsubscribed", NO, NO}, {"unsubscribed", NI, N}, {"unsubscribed", NOI, NO},
		{"unsubscribed", To, To}, {"unsubscribed", TI, To}, {"unsubscribed", F, N}, {"unsubscribed", FO, NO}, {"unsubscribed", B, To},
		// cancelling a pre-approval
		{"unsubscribed", ap(N), N}, {"unsubscribed", ap(To), To},
	}
	for _, c := range cases {
		got, _ := Outbound(c.typ, c.in)
		got.InRoster = false
		if got != c.want {
			t.Errorf("outbound %s from %+v: got %+v want %+v", c.typ, c.in, got, c.want)
		}
	}
}

func TestInboundTable(t *testing.T) {
	N, NO, NI, NOI := State{Sub: SubNone}, State{Sub: SubNone, Ask: true}, State{Sub: SubNone, PendIn: true}, State{Sub: SubNone, Ask: true, PendIn: true}
	To, TI, F, FO, B := State{Sub: SubTo}, State{Sub: SubTo, PendIn: true}, State{Sub: SubFrom}, State{Sub: SubFrom, Ask: true}, State{Sub: SubBoth}
	cases := []struct {
		typ      string
		in, want State
		deliver  bool
		auto     string
	}{
		// A.3.1 subscribe
		{"subscribe", N, NI, true, ""}, {"subscribe", NO, NOI, true, ""}, {"subscribe", NI, NI, true, ""},
		{"subscribe", To, TI, true, ""}, {"subscribe", F, F, false, "subscribed"}, {"subscribe", FO, FO, false, "subscribed"},
		{"subscribe", B, B, false, "subscribed"},
		// pre-approved: granted at once, the user is not asked
		{"subscribe", ap(N), F, false, "subscribed"}, {"subscribe", ap(NO), FO, false, "subscribed"},
		{"subscribe", ap(To), B, false, "subscribed"},
		// A.3.2 subscribed
		{"subscribed", N, N, false, ""}, {"subscribed", NO, To, true, ""}, {"subscribed", NI, NI, false, ""},
		{"subscribed", NOI, TI, true, ""}, {"subscribed", To, To, false, ""}, {"subscribed", F, F, false, ""},
		{"subscribed", FO, B, true, ""}, {"subscribed", B, B, false, ""},
		// A.3.3 unsubscribe
		{"unsubscribe", N, N, false, ""}, {"unsubscribe", NI, N, true, ""}, {"unsubscribe", NOI, NO, true, ""},
		{"unsubscribe", TI, To, true, ""}, {"unsubscribe", F, N, true, ""}, {"unsubscribe", FO, NO, true, ""},
		{"unsubscribe", B, To, true, ""}, {"unsubscribe", To, To, false, ""},
		// A.3.4 unsubscribed
		{"unsubscribed", N, N, false, ""}, {"unsubscribed", NO, N, true, ""}, {"unsubscribed", NOI, NI, true, ""},
		{"unsubscribed", To, N, true, ""}, {"unsubscribed", TI, NI, true, ""}, {"unsubscribed", FO, F, true, ""},
		{"unsubscribed", B, F, true, ""}, {"unsubscribed", F, F, false, ""},
	}
	for _, c := range cases {
		got, del, auto := Inbound(c.typ, c.in)
		if got != c.want || del != c.deliver || auto != c.auto {
			t.Errorf("inbound %s from %+v: got %+v deliver=%v auto=%q; want %+v %v %q", c.typ, c.in, got, del, auto, c.want, c.deliver, c.auto)
		}
	}
}
