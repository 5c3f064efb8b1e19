package modutil

import (
	"reflect"
	"testing"

	"xedge/xmppd/xmlstream"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	e := xmlstream.New("jabber:client", "message", "to", "a@b", "type", "chat")
	e.SetAttrNS(xmlstream.NSXML, "lang", "en")
	e.Append(xmlstream.New("jabber:client", "body").AppendText("hi <there> & \"you\""))
	e.Append(xmlstream.New("urn:xmpp:delay", "delay", "stamp", "2026-01-01T00:00:00Z"))
	e.AppendText("tail")
	got, err := Decode(Encode(e))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, e) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, e)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Encode(xmlstream.New("a", "b", "c", "d").AppendText("x")))
	f.Add([]byte(`{"l":"x","c":[{"l":"y","c":["t",{"l":"z"}]}]}`))
	f.Add([]byte(`{"l":"x","a":[["a"]]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			return
		}
		again, err := Decode(Encode(e))
		if err != nil || !reflect.DeepEqual(again, e) {
			t.Fatalf("re-encode of a decoded element differs: %v", err)
		}
	})
}

func TestKeysAndUsers(t *testing.T) {
	if Key("a", "b@c") != "a\x00b@c" || UserPrefix("a") != "a\x00" || LocalUser("a@b") != "a" || LocalUser("a") != "a" {
		t.Fatal("keys")
	}
	if Type(xmlstream.New("", "message")) != "normal" || Type(xmlstream.New("", "presence")) != "available" {
		t.Fatal("types")
	}
}
