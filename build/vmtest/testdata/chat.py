"""Log two users in through the VM's forwarded c2s port and exchange a message.

usage: chat.py HOST PORT DOMAIN USER1 PASS1 USER2 PASS2
Prints RECEIVED <body> and exits 0 when USER2 got USER1's message.
"""
import asyncio
import logging
import ssl
import sys

import slixmpp

logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
host, port, domain, u1, p1, u2, p2 = sys.argv[1:8]
port = int(port)


def client(user, password):
    c = slixmpp.ClientXMPP("%s@%s/vmtest" % (user, domain), password)
    c.ssl_context.check_hostname = False
    c.ssl_context.verify_mode = ssl.CERT_NONE
    return c


async def start(c):
    loop = asyncio.get_event_loop()
    f = loop.create_future()

    def ok(_):
        if not f.done():
            f.set_result(True)

    def fail(_=None):
        if not f.done():
            f.set_exception(RuntimeError("login failed for %s" % c.boundjid))
    c.add_event_handler("session_start", ok)
    c.add_event_handler("failed_all_auth", fail)
    c.add_event_handler("connection_failed", fail)
    c.connect((host, port))
    await asyncio.wait_for(f, 60)
    c.send_presence()


async def main():
    a, b = client(u1, p1), client(u2, p2)
    await start(a)
    await start(b)
    loop = asyncio.get_event_loop()
    got_b, got_a = loop.create_future(), loop.create_future()

    def on_b(msg):
        if msg["type"] in ("chat", "normal") and not got_b.done():
            got_b.set_result(msg["body"])

    def on_a(msg):
        if msg["type"] in ("chat", "normal") and not got_a.done():
            got_a.set_result(msg["body"])
    b.add_event_handler("message", on_b)
    a.add_event_handler("message", on_a)
    # The first message goes to b's bare JID: it races b's initial presence under
    # TCG, which once left it in offline storage (fixed in xmppd/mod, see
    # TestBareMessageRacingInitialPresence). The reply goes to a's full JID.
    a.send_message(mto=str(b.boundjid.bare), mbody="hello from the vm test", mtype="chat")
    body = await asyncio.wait_for(got_b, 60)
    print("RECEIVED", body, flush=True)
    b.send_message(mto=str(a.boundjid), mbody="hello back", mtype="chat")
    body = await asyncio.wait_for(got_a, 60)
    print("REPLY", body, flush=True)
    a.disconnect()
    b.disconnect()


asyncio.get_event_loop().run_until_complete(main())
