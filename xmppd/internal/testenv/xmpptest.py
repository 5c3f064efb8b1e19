"""Helpers for xmppd integration tests driving python3-slixmpp.

Environment (set by the Go package testenv): XMPP_HOST, XMPP_PORT (STARTTLS),
XMPP_TLS_PORT (direct TLS, XEP-0368), XMPP_DOMAIN.
"""
import asyncio
import logging
import os
import ssl
import sys

import slixmpp

HOST = os.environ.get("XMPP_HOST", "127.0.0.1")
PORT = int(os.environ.get("XMPP_PORT", "5222"))
TLS_PORT = int(os.environ.get("XMPP_TLS_PORT", "0") or 0)
DOMAIN = os.environ.get("XMPP_DOMAIN", "localhost")

logging.basicConfig(level=logging.ERROR, stream=sys.stderr)


def jid(user, resource=None):
    j = "%s@%s" % (user, DOMAIN)
    return j + "/" + resource if resource else j


def client(full_jid, password, plugins=(), **kw):
    """A ClientXMPP that accepts the server's self-signed certificate."""
    c = slixmpp.ClientXMPP(full_jid, password, **kw)
    c.ssl_context.check_hostname = False
    c.ssl_context.verify_mode = ssl.CERT_NONE
    for p in plugins:
        c.register_plugin(p)
    return c


def future():
    return asyncio.get_event_loop().create_future()


def event(c, name, pred=None):
    """A future resolved with the next event `name` (matching pred)."""
    f = future()

    def h(data=None):
        if not f.done() and (pred is None or pred(data)):
            f.set_result(data)
    c.add_event_handler(name, h)
    return f


async def start(c, direct_tls=False, timeout=15, presence=True, priority=None):
    """Connect, authenticate, bind; raises on auth failure or disconnect."""
    f = future()

    def ok(_):
        if not f.done():
            f.set_result(True)

    def fail(what):
        def h(_=None):
            if not f.done():
                f.set_exception(RuntimeError("%s for %s" % (what, c.boundjid)))
        return h
    c.add_event_handler("session_start", ok)
    c.add_event_handler("failed_all_auth", fail("authentication failed"))
    c.add_event_handler("connection_failed", fail("connection failed"))
    if direct_tls:
        c.connect((HOST, TLS_PORT), use_ssl=True, force_starttls=False)
    else:
        c.connect((HOST, PORT))
    await asyncio.wait_for(f, timeout)
    if presence:
        if priority is None:
            c.send_presence()
        else:
            c.send_presence(ppriority=priority)
    return c


def mechanism(c):
    """The SASL mechanism used to log in."""
    return c.plugin["feature_mechanisms"].mech.name


async def stop(c, timeout=5):
    d = event(c, "disconnected")
    c.disconnect()
    try:
        await asyncio.wait_for(d, timeout)
    except asyncio.TimeoutError:
        pass


def run(main, timeout=60):
    """Run coroutine main() with an overall timeout; exit 1 on any error."""
    async def wrapped():
        await asyncio.wait_for(main(), timeout)
    try:
        asyncio.run(wrapped())
    except Exception as e:  # noqa: BLE001 - report everything to the Go test
        import traceback
        traceback.print_exc()
        print("FAIL:", repr(e))
        sys.exit(1)
    print("PASS")
