package piefxis

import (
	"bufio"
	"errors"
	"io"

	"xedge/xmppd/xmlstream"
)

// Writer writes a XEP-0227 document: server-data, then hosts, each with its
// users, one user per line; or (NewHostWriter) one host as the document, the
// per-host file of ejabberd's export layout.
type Writer struct {
	w        *bufio.Writer
	inHost   bool
	hostRoot bool // the document is one <host/>
	closed   bool
	buf      []byte
}

// NewHostWriter writes the XML declaration and the start of a <host/> that is
// the document's root (ejabberd's per-host file, included by the main file
// WriteMain writes); write its users with User, end it with Close.
func NewHostWriter(w io.Writer, jid string) (*Writer, error) {
	bw := bufio.NewWriterSize(w, 256<<10)
	_, err := bw.WriteString("<?xml version='1.0' encoding='UTF-8'?>\n<host xmlns='" + NS + "' jid='" + escapeAttr(jid) + "'>\n")
	return &Writer{w: bw, inHost: true, hostRoot: true}, err
}

// WriteMain writes the main file of ejabberd's export layout: a server-data
// that includes (XInclude) each host's file, hrefs relative to the main file.
func WriteMain(w io.Writer, hrefs []string) error {
	bw := bufio.NewWriter(w)
	bw.WriteString("<?xml version='1.0' encoding='UTF-8'?>\n<server-data xmlns='" + NS + "' xmlns:xi='" + NSXInclude + "'>\n")
	for _, h := range hrefs {
		bw.WriteString("<xi:include href='" + escapeAttr(h) + "'/>\n")
	}
	bw.WriteString("</server-data>\n")
	return bw.Flush()
}

// NewWriter writes the XML declaration and <server-data/>'s start to w.
func NewWriter(w io.Writer) (*Writer, error) {
	bw := bufio.NewWriterSize(w, 256<<10)
	_, err := bw.WriteString("<?xml version='1.0' encoding='UTF-8'?>\n<server-data xmlns='" + NS + "'>\n")
	return &Writer{w: bw}, err
}

// StartHost opens a <host/> (closing the previous one).
func (w *Writer) StartHost(jid string) error {
	if w.closed {
		return errors.New("piefxis: writer closed")
	}
	if w.hostRoot {
		return errors.New("piefxis: a host file holds one host")
	}
	if err := w.endHost(); err != nil {
		return err
	}
	w.buf = append(w.buf[:0], "<host jid='"...)
	w.buf = append(w.buf, escapeAttr(jid)...)
	w.buf = append(w.buf, "'>\n"...)
	w.inHost = true
	_, err := w.w.Write(w.buf)
	return err
}

func (w *Writer) endHost() error {
	if !w.inHost {
		return nil
	}
	w.inHost = false
	_, err := w.w.WriteString("</host>\n")
	return err
}

// User writes one user of the current host.
func (w *Writer) User(u *User) error {
	if !w.inHost {
		return errors.New("piefxis: user outside a host")
	}
	w.buf = xmlstream.AppendElement(w.buf[:0], u.Element(), NS)
	w.buf = append(w.buf, '\n')
	_, err := w.w.Write(w.buf)
	return err
}

// Close ends the document and flushes it (it does not close the underlying writer).
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	if err := w.endHost(); err != nil {
		return err
	}
	if w.hostRoot {
		return w.w.Flush()
	}
	if _, err := w.w.WriteString("</server-data>\n"); err != nil {
		return err
	}
	return w.w.Flush()
}

func escapeAttr(s string) string {
	e := xmlstream.New("", "x", "v", s)
	b := xmlstream.AppendElement(nil, e, "")
	// <x v='...'/>
	return string(b[len("<x v='") : len(b)-len("'/>")])
}
