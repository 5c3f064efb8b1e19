package servers

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// archiveScript inserts an owner's archive into ejabberd's SQLite database in one
// transaction, rows as ejabberd's mod_mam writes them (checked against rows it
// wrote itself: username, microsecond timestamp, full and bare peer, the message
// as XML, its body as txt, kind chat, empty nick).
const archiveScript = `
import sqlite3, sys, time
db, domain, owner, peers, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
c = sqlite3.connect(db, timeout=30)
# ejabberd creates its database with the schema when it first opens it; if it
# has not yet, the schema is loaded from the file it would use.
if c.execute("SELECT count(*) FROM sqlite_master WHERE name = 'archive'").fetchone()[0] == 0:
    c.executescript(open('/usr/share/ejabberd/sql/lite.sql').read())
base = int(time.time() * 1e6) - n * 1000
rows = []
for i in range(1, n + 1):
    k = 1 + i % peers
    peer = f'{owner[:-1]}{k}@{domain}/r{k}'
    body = f'archived message {i}'
    xml = f"<message xml:lang='en' to='{peer}' from='{owner}@{domain}/r0' type='chat' xmlns='jabber:client'><body>{body}</body></message>"
    rows.append((owner, base + i * 1000, peer, peer.split('/')[0], xml, body, 'chat', ''))
with c:
    c.executemany('INSERT INTO archive (username, timestamp, peer, bare_peer, xml, txt, kind, nick) VALUES (?,?,?,?,?,?,?,?)', rows)
print(c.execute('SELECT count(*) FROM archive WHERE username = ?', (owner,)).fetchone()[0])
`

// HasSQLite reports whether ejabberd's SQLite driver (Debian's
// erlang-p1-sqlite3) is installed: the benchmark's ejabberd keeps its archive in
// SQLite then, else in Mnesia.
func HasSQLite() bool {
	m, _ := filepath.Glob("/usr/lib/erlang/lib/p1_sqlite3-*/ebin/sqlite3.app")
	return len(m) > 0
}

// WriteArchive stores n chat messages from owner (a local part ending in 0, as
// the MAM workload's users: prefix0) to its peers prefix1..prefix<peers>, round
// robin, straight into the server's archive storage. Only ejabberd (mod_mam on
// SQLite) supports it: filling its archive over XMPP runs at 25-100 messages/s
// here (one SQLite transaction per message; Mnesia's archive is a dets bag that
// rereads an owner's whole archive on each insert), so 100,000 messages would
// take most of an hour.
func (s *Server) WriteArchive(ctx context.Context, owner string, peers, n int) (int, error) {
	if s.cfg.Kind != Ejabberd || !HasSQLite() {
		return 0, fmt.Errorf("%s: archives are written over XMPP", s.cfg.Kind)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "/usr/bin/python3", "-c", archiveScript, filepath.Join(s.dir, "spool", "ejabberd.db"),
		s.cfg.Domain, owner, strconv.Itoa(peers), strconv.Itoa(n)).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("ejabberd: write archive: %w: %s", err, out)
	}
	got, err := strconv.Atoi(string(trimSpace(out)))
	if err != nil {
		return 0, fmt.Errorf("ejabberd: write archive: %q", out)
	}
	return got, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
