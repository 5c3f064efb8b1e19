package servers

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
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

// prosodyArchiveScript inserts an owner's archive into Prosody's SQLite database
// (mod_storage_sql's prosodyarchive table, which Prosody creates when it loads
// the storage module) in one transaction, rows as mod_mam writes them (checked
// against rows it wrote itself: host, user (local part), store 'archive', a UUID
// key, the time in seconds, the bare peer as 'with', type 'xml', the message).
const prosodyArchiveScript = `
import sqlite3, sys, time, uuid
db, domain, owner, peers, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
c = sqlite3.connect(db, timeout=30)
base = int(time.time()) - n
rows = []
for i in range(1, n + 1):
    k = 1 + i % peers
    peer = f'{owner[:-1]}{k}@{domain}'
    xml = f"<message xmlns='jabber:client' to='{peer}/r{k}' type='chat' from='{owner}@{domain}/r0'><body>archived message {i}</body></message>"
    rows.append((domain, owner, 'archive', str(uuid.uuid4()), base + i, peer, 'xml', xml))
with c:
    c.executemany('INSERT INTO prosodyarchive (host, user, store, key, "when", "with", type, value) VALUES (?,?,?,?,?,?,?,?)', rows)
print(c.execute("SELECT count(*) FROM prosodyarchive WHERE host = ? AND user = ? AND store = 'archive'", (domain, owner)).fetchone()[0])
`

// HasLuaDBI reports whether Prosody's SQLite driver (Debian's lua-dbi-sqlite3,
// for Prosody's Lua 5.4) is installed: the benchmark's Prosody keeps its
// archives in SQLite then, else in its internal storage.
func HasLuaDBI() bool {
	_, err := os.Stat("/usr/lib/x86_64-linux-gnu/lua/5.4/dbd/sqlite3.so")
	return err == nil
}

// HasSQLite reports whether ejabberd's SQLite driver (Debian's
// erlang-p1-sqlite3) is installed: the benchmark's ejabberd keeps its archive in
// SQLite then, else in Mnesia.
func HasSQLite() bool {
	m, _ := filepath.Glob("/usr/lib/erlang/lib/p1_sqlite3-*/ebin/sqlite3.app")
	return len(m) > 0
}

// CanWriteArchive reports whether WriteArchive works for this server: ejabberd
// with mod_mam on SQLite, Prosody with its archives on SQLite.
func (s *Server) CanWriteArchive() bool {
	switch s.cfg.Kind {
	case Ejabberd:
		return HasSQLite()
	case Prosody:
		return HasLuaDBI()
	}
	return false
}

// WriteArchive stores n chat messages from owner (a local part ending in 0, as
// the MAM workload's users: prefix0) to its peers prefix1..prefix<peers>, round
// robin, straight into the server's archive storage (see CanWriteArchive).
// Filling an SQL archive over XMPP runs at 25-100 messages/s for ejabberd here
// (one SQLite transaction per message; Mnesia's archive is a dets bag that
// rereads an owner's whole archive on each insert) and is bound by a
// transaction per message in Prosody too, so 100,000 messages would take most
// of an hour; the queries measured are the same either way.
func (s *Server) WriteArchive(ctx context.Context, owner string, peers, n int) (int, error) {
	if !s.CanWriteArchive() {
		return 0, fmt.Errorf("%s: archives are written over XMPP", s.cfg.Kind)
	}
	script, db := archiveScript, filepath.Join(s.dir, "spool", "ejabberd.db")
	if s.cfg.Kind == Prosody {
		script, db = prosodyArchiveScript, filepath.Join(s.dir, "data", "prosody.sqlite")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", "-c", script, db,
		s.cfg.Domain, owner, strconv.Itoa(peers), strconv.Itoa(n))
	// As the server's user: SQLite's journal files must stay writable by it.
	cred, err := lookupIDs(s.cfg.Kind)
	if err != nil {
		return 0, err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%s: write archive: %w: %s", s.cfg.Kind, err, out)
	}
	got, err := strconv.Atoi(string(trimSpace(out)))
	if err != nil {
		return 0, fmt.Errorf("%s: write archive: %q", s.cfg.Kind, out)
	}
	return got, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
