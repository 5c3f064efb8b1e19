package piefxis

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"xedge/xmppd/xmlstream"
)

// MaxUserBytes bounds the XML of one <user/> (its offline messages included).
const MaxUserBytes = 256 << 20

// maxIncludeDepth bounds nested xi:include (ejabberd uses one level).
const maxIncludeDepth = 4

// Reader reads a XEP-0227 file and the files it includes (xi:include, as
// ejabberd writes a host per file), calling a function for each user.
type Reader struct {
	read  atomic.Int64 // bytes consumed, every file
	total atomic.Int64 // bytes of the files opened so far
	users atomic.Int64
}

// Progress returns the bytes read, the bytes of the files opened so far and the
// users decoded; safe to call while Read runs.
func (r *Reader) Progress() (read, total, users int64) {
	return r.read.Load(), r.total.Load(), r.users.Load()
}

// UserFunc receives each user with the JID of its host.
type UserFunc func(host string, u *User) error

// ReadFile reads the file at path. Included files are resolved relative to
// its directory and must stay inside it.
func (r *Reader) ReadFile(path string, fn UserFunc) error {
	return r.readFile(path, filepath.Dir(path), "", fn, 0)
}

// readFile reads one file; host is the host of an including file ("" for the top).
func (r *Reader) readFile(path, dir, host string, fn UserFunc, depth int) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("piefxis: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil {
		r.total.Add(st.Size())
	}
	if err := r.decode(&countingReader{r: f, n: &r.read}, dir, host, fn, depth); err != nil {
		if depth > 0 {
			return fmt.Errorf("%s: %w", filepath.Base(path), err)
		}
		return fmt.Errorf("piefxis: %s: %w", filepath.Base(path), err)
	}
	return nil
}

// FileHosts lists the hosts of the file at path in document order, without
// reading their users where it can: an included file's host is its root
// element, so for ejabberd's layout (a main file including one file per host)
// only the first element of each file is read; a host written inline is
// skipped over. An import checks the hosts with it before writing anything.
func FileHosts(path string) ([]string, error) {
	var out []string
	if err := fileHosts(path, filepath.Dir(path), &out, 0); err != nil {
		return nil, fmt.Errorf("piefxis: %s: %w", filepath.Base(path), err)
	}
	return out, nil
}

func fileHosts(path, dir string, out *[]string, depth int) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	d := xml.NewDecoder(f)
	d.Strict = true
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			switch {
			case t.Name.Space == NSXInclude && t.Name.Local == "include":
				href := attr(t, "href")
				if err := d.Skip(); err != nil {
					return err
				}
				p, err := includePath(dir, href, depth)
				if err != nil {
					return err
				}
				if err := fileHosts(p, dir, out, depth+1); err != nil {
					return fmt.Errorf("%s: %w", filepath.Base(p), err)
				}
			case isPIE(t.Name.Space) && t.Name.Local == "host":
				h := attr(t, "jid")
				if h == "" {
					return errors.New("<host/> without a jid")
				}
				*out = append(*out, h)
				if depth > 0 {
					return nil // an included host file: its root is all there is to know
				}
				if err := d.Skip(); err != nil {
					return err
				}
			}
		case xml.Directive:
			return errors.New("DTDs and entity declarations are not accepted")
		}
	}
}

// Read reads one document from in; includes are resolved relative to dir ("":
// includes are refused).
func (r *Reader) Read(in io.Reader, dir string, fn UserFunc) error {
	if err := r.decode(&countingReader{r: in, n: &r.read}, dir, "", fn, 0); err != nil {
		return fmt.Errorf("piefxis: %w", err)
	}
	return nil
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func isPIE(space string) bool { return space == NS || space == NSOld }

// decode walks the document: server-data > host > user, or a host as the root
// (an included file), with xi:include allowed under server-data and host.
func (r *Reader) decode(in io.Reader, dir, host string, fn UserFunc, depth int) error {
	d := xml.NewDecoder(in)
	d.Strict = true
	var stack []string // local names of the open PIE elements
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			if len(stack) > 0 {
				return fmt.Errorf("unexpected end of file inside <%s>", stack[len(stack)-1])
			}
			return nil
		}
		if err != nil {
			return err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			switch {
			case t.Name.Space == NSXInclude && t.Name.Local == "include":
				href := attr(t, "href")
				if err := d.Skip(); err != nil {
					return err
				}
				if err := r.include(dir, href, host, fn, depth); err != nil {
					return err
				}
			case isPIE(t.Name.Space) && t.Name.Local == "server-data" && len(stack) == 0:
				stack = append(stack, "server-data")
			case isPIE(t.Name.Space) && t.Name.Local == "host" && (len(stack) == 0 || stack[len(stack)-1] == "server-data"):
				host = attr(t, "jid")
				if host == "" {
					return errors.New("<host/> without a jid")
				}
				stack = append(stack, "host")
			case isPIE(t.Name.Space) && t.Name.Local == "user" && len(stack) > 0 && stack[len(stack)-1] == "host":
				start := d.InputOffset()
				e, err := element(d, t, start)
				if err != nil {
					return fmt.Errorf("user %q: %w", attr(t, "name"), err)
				}
				u, err := userFromElement(e)
				if err != nil {
					return err
				}
				r.users.Add(1)
				if err := fn(host, u); err != nil {
					return err
				}
			default:
				return fmt.Errorf("unexpected element {%s}%s", t.Name.Space, t.Name.Local)
			}
		case xml.EndElement:
			if len(stack) > 0 && isPIE(t.Name.Space) && t.Name.Local == stack[len(stack)-1] {
				stack = stack[:len(stack)-1]
			}
		case xml.Directive:
			return errors.New("DTDs and entity declarations are not accepted")
		}
	}
}

// include reads an xi:include'd file, which must lie inside dir.
func (r *Reader) include(dir, href, host string, fn UserFunc, depth int) error {
	p, err := includePath(dir, href, depth)
	if err != nil {
		return err
	}
	return r.readFile(p, dir, host, fn, depth+1)
}

// includePath is the file an xi:include names, which must lie inside dir.
func includePath(dir, href string, depth int) (string, error) {
	if dir == "" {
		return "", fmt.Errorf("xi:include %q: includes are not allowed here", href)
	}
	if depth >= maxIncludeDepth {
		return "", fmt.Errorf("xi:include %q: nested too deep", href)
	}
	if href == "" || filepath.IsAbs(href) || strings.Contains(href, "://") {
		return "", fmt.Errorf("xi:include %q: only a file relative to the including file is accepted", href)
	}
	p := filepath.Join(dir, filepath.FromSlash(href))
	if rel, err := filepath.Rel(dir, p); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("xi:include %q: outside the directory of the including file", href)
	}
	return p, nil
}

func attr(t xml.StartElement, local string) string {
	for _, a := range t.Attr {
		if a.Name.Local == local && a.Name.Space == "" {
			return a.Value
		}
	}
	return ""
}

// element reads the subtree of start into an xmlstream.Element (namespaces
// resolved, declarations dropped), refusing one larger than MaxUserBytes.
func element(d *xml.Decoder, start xml.StartElement, offset int64) (*xmlstream.Element, error) {
	root := convertStart(start)
	stack := []*xmlstream.Element{root}
	for len(stack) > 0 {
		if d.InputOffset()-offset > MaxUserBytes {
			return nil, fmt.Errorf("larger than %d bytes", MaxUserBytes)
		}
		tok, err := d.Token()
		if err != nil {
			return nil, err
		}
		top := stack[len(stack)-1]
		switch t := tok.(type) {
		case xml.StartElement:
			e := convertStart(t)
			top.Nodes = append(top.Nodes, e)
			stack = append(stack, e)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if n := len(top.Nodes); n > 0 {
				if prev, ok := top.Nodes[n-1].(xmlstream.CharData); ok {
					top.Nodes[n-1] = prev + xmlstream.CharData(t)
					continue
				}
			}
			top.Nodes = append(top.Nodes, xmlstream.CharData(string(t)))
		case xml.Directive:
			return nil, errors.New("DTDs and entity declarations are not accepted")
		}
	}
	trimSpace(root)
	return root, nil
}

func convertStart(t xml.StartElement) *xmlstream.Element {
	e := &xmlstream.Element{Space: t.Name.Space, Local: t.Name.Local}
	for _, a := range t.Attr {
		if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
			continue
		}
		sp := a.Name.Space
		if sp == "xml" {
			sp = xmlstream.NSXML
		}
		e.Attrs = append(e.Attrs, xmlstream.Attr{Space: sp, Local: a.Name.Local, Value: a.Value})
	}
	return e
}

// trimSpace drops whitespace-only text between elements (indentation), keeping
// text of leaf elements as is: XEP-0227 files are pretty-printed by some tools.
func trimSpace(e *xmlstream.Element) {
	hasElem := false
	for _, n := range e.Nodes {
		if _, ok := n.(*xmlstream.Element); ok {
			hasElem = true
			break
		}
	}
	if !hasElem {
		return
	}
	out := e.Nodes[:0]
	for _, n := range e.Nodes {
		switch n := n.(type) {
		case xmlstream.CharData:
			if strings.TrimSpace(string(n)) == "" {
				continue
			}
			out = append(out, n)
		case *xmlstream.Element:
			trimSpace(n)
			out = append(out, n)
		}
	}
	e.Nodes = out
}
