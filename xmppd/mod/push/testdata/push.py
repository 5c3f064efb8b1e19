#!/usr/bin/python3
"""Push notification scenarios (XEP-0357) for xmppd with a real test app server.

usage: push.py PHASE COMPONENT_PORT SECRET PASSWORD XMPPCTL SOCKET

The app server is a slixmpp ComponentXMPP (push.DOMAIN, XEP-0114) that records
every pubsub publish it receives and answers it with a result, or with
<item-not-found/> for nodes named "gone-*".

main: alice (XEP-0198 with resumption) enables push with a publish-options form,
sees urn:xmpp:push:0 on her account, and loses her connection without closing the
stream (the session waits for resumption); bob's message to her makes the app
server receive a notification (message-count 1, bob as the sender, no body), and a
second one message-count 2. carol enables push on a node the app server answers
with an error, logs out; bob's message goes to offline storage and is notified;
the app server's error disables carol's registration: bob's next message to carol
is not notified (a notification for alice, sent after it, arrives first), and
carol gets both messages from offline storage. alice disables push on one node.
restart: after an xmppd restart alice's remaining registration is still there:
bob's message to the offline alice is notified.
Prints OK and exits 0, or says what went wrong and exits 1. Every wait is bounded.
"""
import asyncio
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp import ComponentXMPP
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

import xmpptest as X

PHASE, CPORT, SECRET, PW, CTL, SOCK = sys.argv[1:7]
APP = 'push.' + X.DOMAIN
PS = 'http://jabber.org/protocol/pubsub'
PUSH = 'urn:xmpp:push:0'
XD = 'jabber:x:data'


class AppServer(ComponentXMPP):
    def __init__(self):
        super().__init__(APP, SECRET, X.HOST, int(CPORT))
        self.pubs = asyncio.Queue()
        self.register_handler(Callback('push publish', MatchXPath('{jabber:component:accept}iq/{%s}pubsub' % PS), self.on_publish))

    def on_publish(self, iq):
        ps = iq.xml.find('{%s}pubsub' % PS)
        pub = ps.find('{%s}publish' % PS)
        node = pub.get('node')
        fields = {}
        for f in pub.iter('{%s}field' % XD):
            fields[f.get('var')] = [v.text for v in f.findall('{%s}value' % XD)]
        opts = {}
        po = ps.find('{%s}publish-options' % PS)
        if po is not None:
            for f in po.iter('{%s}field' % XD):
                opts[f.get('var')] = [v.text for v in f.findall('{%s}value' % XD)]
        self.pubs.put_nowait({'from': str(iq['from']), 'node': node, 'fields': fields, 'opts': opts})
        r = iq.reply(clear=False)
        if node.startswith('gone-'):
            r['type'] = 'error'
            r['error']['type'] = 'cancel'
            r['error']['condition'] = 'item-not-found'
            r.send()
            # Behind the error on the same stream: whoever receives this knows
            # xmppd has processed the error.
            self.send_message(mto=X.jid('bob'), mfrom=APP, mbody='answered ' + node, mtype='chat')
        else:
            r.clear()
            r.send()

    async def next(self, what, timeout=10):
        try:
            return await asyncio.wait_for(self.pubs.get(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError('app server: no notification for ' + what)


def ok(step):
    print('ok', step, flush=True)


def user(name, res, sm=False):
    c = X.client(X.jid(name, res), PW, plugins=['xep_0030'] + (['xep_0198'] if sm else []))
    c.msgs = asyncio.Queue()
    c.add_event_handler('message', lambda m: c.msgs.put_nowait(m))
    return c


async def iq_set(c, payload):
    iq = c.make_iq_set()
    iq.append(payload)
    return await iq.send(timeout=10)


def enable(node, secret=None):
    e = ET.Element('{%s}enable' % PUSH, jid=APP, node=node)
    if secret:
        x = ET.SubElement(e, '{%s}x' % XD, type='submit')
        for var, val in (('FORM_TYPE', 'http://jabber.org/protocol/pubsub#publish-options'), ('secret', secret)):
            f = ET.SubElement(x, '{%s}field' % XD, var=var)
            ET.SubElement(f, '{%s}value' % XD).text = val
    return e


def check(p, node, count, sender):
    f = p['fields']
    assert p['node'] == node, p
    assert f.get('FORM_TYPE') == ['urn:xmpp:push:summary'], p
    assert f.get('message-count') == [str(count)], p
    assert f.get('last-message-sender') == [sender], p
    assert 'last-message-body' not in f, 'body sent with push-include-body off: %r' % p


async def wait_detached(jid, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        out = subprocess.run([CTL, '--socket', SOCK, '--json', 'sessions'], capture_output=True, text=True).stdout
        for s in json.loads(out or '[]'):
            if s.get('jid') == jid and s.get('detached'):
                return
        await asyncio.sleep(0.05)
    raise AssertionError(jid + ' never shown detached')


async def main():
    app = AppServer()
    started = X.event(app, 'session_start')
    app.connect()
    await asyncio.wait_for(started, 10)
    ok('app-server-connected')
    bob = await X.start(user('bob', 'pc'))
    if PHASE == 'restart':
        bob.send_message(mto=X.jid('alice'), mbody='after the restart', mtype='chat')
        p = await app.next('alice after the restart')
        check(p, 'dev-node-1', 1, X.jid('bob', 'pc'))
        assert p['from'] == X.jid('alice'), p
        ok('registration-survives-restart')
        await X.stop(bob)
        return

    alice = user('alice', 'phone', sm=True)
    await X.start(alice)
    await iq_set(alice, enable('dev-node-1', 'tok3n'))
    await iq_set(alice, enable('dev-node-2'))
    info = await alice['xep_0030'].get_info(jid=X.jid('alice'), timeout=10)
    assert PUSH in info['disco_info']['features'], info
    ok('enabled')

    # alice's connection drops without a stream close: the session waits for resumption.
    alice.transport.abort()
    await wait_detached(X.jid('alice', 'phone'))
    bob.send_message(mto=X.jid('alice'), mbody='wake up', mtype='chat')
    got = {}
    for _ in range(2):
        p = await app.next('the hibernated alice')
        got[p['node']] = p
    assert set(got) == {'dev-node-1', 'dev-node-2'}, got
    for n, p in got.items():
        check(p, n, 1, X.jid('bob', 'pc'))
        assert p['from'] == X.jid('alice'), p
    assert got['dev-node-1']['opts'].get('secret') == ['tok3n'], got['dev-node-1']
    assert got['dev-node-2']['opts'] == {}, got['dev-node-2']
    ok('notified-hibernated')
    bob.send_message(mto=X.jid('alice'), mbody='still there?', mtype='chat')
    for _ in range(2):
        p = await app.next('the second message to alice')
        check(p, p['node'], 2, X.jid('bob', 'pc'))
    ok('message-count')

    carol = await X.start(user('carol', 'tablet'))
    await iq_set(carol, enable('gone-carol'))
    await X.stop(carol)
    bob.send_message(mto=X.jid('carol'), mbody='offline one', mtype='chat')
    p = await app.next('the offline carol')
    check(p, 'gone-carol', 1, X.jid('bob', 'pc'))
    ok('notified-offline')
    m = await asyncio.wait_for(bob.msgs.get(), 10)
    assert m['body'] == 'answered gone-carol', m
    # The error reply disabled carol's registration: her next message is not
    # notified; alice's notification, routed after it, is the next to arrive.
    bob.send_message(mto=X.jid('carol'), mbody='offline two', mtype='chat')
    bob.send_message(mto=X.jid('alice'), mbody='third', mtype='chat')
    for _ in range(2):
        p = await app.next('alice after carol')
        assert p['node'] != 'gone-carol', 'carol notified after the app server error: %r' % p
        check(p, p['node'], 3, X.jid('bob', 'pc'))
    ok('error-disables')
    carol = user('carol', 'tablet')
    await X.start(carol)
    bodies = set()
    for _ in range(2):
        m = await asyncio.wait_for(carol.msgs.get(), 10)
        bodies.add(m['body'])
    assert bodies == {'offline one', 'offline two'}, bodies
    ok('offline-delivered')
    await X.stop(carol)

    # A fresh session of alice disables one registration.
    a2 = await X.start(user('alice', 'desk'))
    e = ET.Element('{%s}disable' % PUSH, jid=APP, node='dev-node-2')
    await iq_set(a2, e)
    ok('disabled')
    await X.stop(a2)
    await X.stop(bob)
    app.disconnect()


X.run(main, timeout=60)
