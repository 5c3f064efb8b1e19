#!/usr/bin/python3
"""An ejabberd extauth script, written like the example in ejabberd's
documentation, for xmppd's tests of auth-method external.

usage: extauth.py USERS_FILE [PID_FILE]

USERS_FILE holds "user:password" lines. If PID_FILE is given, the script writes
its process id there at start. The script answers auth, isuser, setpass,
tryregister and removeuser like ejabberd expects, and ends at end of input.
"""
import os
import struct
import sys

USERS = {}
for line in open(sys.argv[1]):
    u, _, p = line.rstrip('\n').partition(':')
    if u:
        USERS[u] = p
if len(sys.argv) > 2:
    with open(sys.argv[2], 'w') as f:
        f.write(str(os.getpid()))


def read_from_stdin(read_bytes):
    if hasattr(sys.stdin, 'buffer'):
        return sys.stdin.buffer.read(read_bytes)
    return sys.stdin.read(read_bytes)


def read():
    (pkt_size,) = struct.unpack('>H', read_from_stdin(2))
    pkt = sys.stdin.read(pkt_size)
    cmd = pkt.split(':')[0]
    if cmd == 'auth':
        user, _, password = pkt.split(':', 3)[1:]
        write(USERS.get(user) == password)
    elif cmd == 'isuser':
        user, _ = pkt.split(':', 2)[1:]
        write(user in USERS)
    elif cmd == 'setpass':
        user, _, password = pkt.split(':', 3)[1:]
        USERS[user] = password
        write(True)
    elif cmd == 'tryregister':
        user, _, password = pkt.split(':', 3)[1:]
        if user in USERS:
            write(False)
        else:
            USERS[user] = password
            write(True)
    elif cmd == 'removeuser':
        user, _ = pkt.split(':', 2)[1:]
        write(USERS.pop(user, None) is not None)
    else:
        write(False)
    read()


def write(result):
    if result:
        sys.stdout.write('\x00\x02\x00\x01')
    else:
        sys.stdout.write('\x00\x02\x00\x00')
    sys.stdout.flush()


if __name__ == "__main__":
    sys.setrecursionlimit(100000)
    try:
        read()
    except struct.error:
        pass
