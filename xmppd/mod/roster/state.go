package roster

// Subscription states (RFC 6121 §2.1.2.5) and the state machine of RFC 6121
// Appendix A, as pure functions so they can be tested table by table.

// Subscription values.
const (
	SubNone = "none"
	SubTo   = "to"
	SubFrom = "from"
	SubBoth = "both"
)

// State is a contact's subscription state as the user's server sees it: the roster
// item's subscription, ask and pre-approval, plus a pending inbound request (kept
// outside the roster, RFC 6121 §3.1.3). InRoster says whether a roster item exists.
type State struct {
	Sub      string
	Ask      bool // pending out
	PendIn   bool // pending in
	Approved bool // pre-approved (RFC 6121 §3.4)
	InRoster bool
}

// HasTo reports whether sub includes 'to' (the user receives the contact's presence).
func HasTo(sub string) bool { return sub == SubTo || sub == SubBoth }

// HasFrom reports whether sub includes 'from' (the contact receives the user's presence).
func HasFrom(sub string) bool { return sub == SubFrom || sub == SubBoth }

func compose(to, from bool) string {
	switch {
	case to && from:
		return SubBoth
	case to:
		return SubTo
	case from:
		return SubFrom
	}
	return SubNone
}

func norm(s State) State {
	if s.Sub == "" {
		s.Sub = SubNone
	}
	return s
}

// Outbound applies a subscription stanza the user sends to the contact (RFC 6121
// A.2). route says whether the stanza goes on to the contact.
func Outbound(typ string, s State) (next State, route bool) {
	s = norm(s)
	to, from := HasTo(s.Sub), HasFrom(s.Sub)
	switch typ {
	case "subscribe": // A.2.1
		if !to {
			s.Ask = true
		}
		s.InRoster = true
		return s, true
	case "subscribed": // A.2.2
		if !s.PendIn {
			if !from && !s.Approved {
				// RFC 6121 §3.4: pre-approval, recorded and not routed.
				s.Approved = true
				s.InRoster = true
			}
			return s, false
		}
		s.PendIn = false
		s.Approved = false
		s.Sub = compose(to, true)
		s.InRoster = true
		return s, true
	case "unsubscribe": // A.2.3
		if to || s.Ask {
			s.Sub = compose(false, from)
			s.Ask = false
		}
		return s, true
	case "unsubscribed": // A.2.4 (also cancels a pre-approval, §3.4)
		if from || s.PendIn {
			s.Sub = compose(to, false)
			s.PendIn = false
		}
		s.Approved = false
		return s, true
	}
	return s, false
}

// Inbound applies a subscription stanza the contact sent to the user (RFC 6121 A.3).
// deliver says whether the user's available resources get it; autoReply is a
// presence type the server sends back to the contact on the user's behalf ("" none).
func Inbound(typ string, s State) (next State, deliver bool, autoReply string) {
	s = norm(s)
	to, from := HasTo(s.Sub), HasFrom(s.Sub)
	switch typ {
	case "subscribe": // A.3.1
		if from {
			return s, false, "subscribed"
		}
		if s.Approved { // §3.4: pre-approved, approve without asking the user
			s.Approved = false
			s.PendIn = false
			s.Sub = compose(to, true)
			return s, false, "subscribed"
		}
		s.PendIn = true
		return s, true, ""
	case "subscribed": // A.3.2
		if !s.Ask || to {
			return s, false, ""
		}
		s.Ask = false
		s.Sub = compose(true, from)
		return s, true, ""
	case "unsubscribe": // A.3.3
		if !from && !s.PendIn {
			return s, false, ""
		}
		s.PendIn = false
		s.Sub = compose(to, false)
		return s, true, ""
	case "unsubscribed": // A.3.4
		if !to && !s.Ask {
			return s, false, ""
		}
		s.Ask = false
		s.Sub = compose(false, from)
		return s, true, ""
	}
	return s, false, ""
}

// IsSubscription reports whether a presence type is one of the four subscription types.
func IsSubscription(typ string) bool {
	switch typ {
	case "subscribe", "subscribed", "unsubscribe", "unsubscribed":
		return true
	}
	return false
}
