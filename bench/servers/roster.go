package servers

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// WriteRosters stores rosters directly in the server's storage, for provisioning
// the presence fan-out without 20,000 subscription handshakes: rosters maps a
// user's local part to the bare JIDs in its roster, every item with subscription
// "both", no name and no groups — what the handshakes leave behind. No session of
// these users may be online (the server reads a roster from storage at login).
//
// Only Prosody is supported: its internal storage is one Lua file per user,
// <data_path>/<host>/roster/<user>.dat (util/datamanager.lua), a table keyed by
// contact JID plus the metadata entry [false] = {version, pending}
// (core/rostermanager.lua). ejabberd (Mnesia) and xmppd have no such offline
// path here and are provisioned over XMPP.
func (s *Server) WriteRosters(rosters map[string][]string) error {
	if s.cfg.Kind != Prosody {
		return fmt.Errorf("%s: offline roster provisioning not supported", s.cfg.Kind)
	}
	cred, err := lookupIDs("prosody")
	if err != nil {
		return err
	}
	dir := filepath.Join(s.dir, "data", prosodyEncode(s.cfg.Domain), "roster")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("prosody rosters: %w", err)
	}
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("prosody rosters: %w", err)
		}
	}
	for user, items := range rosters {
		body, err := prosodyRoster(items)
		if err != nil {
			return fmt.Errorf("prosody roster of %s: %w", user, err)
		}
		p := filepath.Join(dir, prosodyEncode(user)+".dat")
		tmp := p + "~"
		if err := os.WriteFile(tmp, body, 0o640); err != nil {
			return fmt.Errorf("prosody roster of %s: %w", user, err)
		}
		if err := os.Chown(tmp, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("prosody roster of %s: %w", user, err)
		}
		if err := os.Rename(tmp, p); err != nil {
			return fmt.Errorf("prosody roster of %s: %w", user, err)
		}
	}
	return nil
}

// prosodyEncode is util/datamanager.lua's encode: every non-alphanumeric byte
// becomes %xx.
func prosodyEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02x", c)
		}
	}
	return b.String()
}

// prosodyRoster renders one roster file as Prosody's serializer would.
func prosodyRoster(items []string) ([]byte, error) {
	sorted := append([]string(nil), items...)
	sort.Strings(sorted)
	var b strings.Builder
	b.WriteString("return {\n\t[false] = {\n\t\t[\"version\"] = 1;\n\t\t[\"pending\"] = {};\n\t};\n")
	for _, j := range sorted {
		if j == "" || strings.IndexFunc(j, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '@' || r == '.' || r == '-' || r == '_')
		}) >= 0 {
			return nil, fmt.Errorf("contact %q: only [A-Za-z0-9@._-] supported", j)
		}
		fmt.Fprintf(&b, "\t[%q] = {\n\t\t[\"subscription\"] = \"both\";\n\t\t[\"groups\"] = {};\n\t};\n", j)
	}
	b.WriteString("};\n")
	return []byte(b.String()), nil
}
