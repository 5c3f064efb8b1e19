#!/usr/bin/python3
"""Integration scenarios for xmppd's feature modules, driven with slixmpp.

usage: scenarios.py SCENARIO HOST PORT DOMAIN PASSWORD USER...

Each scenario logs real slixmpp clients into a running xmppd, exchanges raw stanzas
and checks the answers; it prints OK and exits 0, or prints what went wrong and
exits 1. Every wait is bounded.
"""
import asyncio
import copy
import logging
import ssl
import sys
import time
import xml.etree.ElementTree as ET

from slixmpp import ClientXMPP

SCENARIO, HOST, PORT, DOMAIN, PW = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
USERS = sys.argv[6:]
C = '{jabber:client}'
RO = '{jabber:iq:roster}'
STANZAS = '{urn:ietf:params:xml:ns:xmpp-stanzas}'


def bare(u):
    return f'{u}@{DOMAIN}'


def s(e):
    return ET.tostring(e, encoding='unicode')


class Client(ClientXMPP):
    def __init__(self, user, res):
        super().__init__(f'{user}@{DOMAIN}/{res}', PW)
        self.auto_authorize = None   # the scenarios answer subscriptions themselves
        self.auto_subscribe = False
        self.got = []
        self.seq = 0
        self.started = asyncio.get_event_loop().create_future()
        self.gone = asyncio.get_event_loop().create_future()
        self.add_filter('in', self._record)
        self.add_event_handler('session_start', lambda _: self.started.done() or self.started.set_result(True))
        self.add_event_handler('failed_auth', lambda _: self.started.done() or self.started.set_exception(AssertionError('auth failed')))
        self.add_event_handler('disconnected', lambda _: self.gone.done() or self.gone.set_result(True))
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE

    def _record(self, st):
        self.got.append(copy.deepcopy(st.xml))
        return st

    async def wait(self, pred, what, timeout=6.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for i, e in enumerate(self.got):
                try:
                    ok = pred(e)
                except Exception:
                    ok = False
                if ok:
                    del self.got[i]
                    return e
            await asyncio.sleep(0.03)
        raise AssertionError(f'{self.boundjid}: timed out waiting for {what}; received: ' + ' | '.join(s(e) for e in self.got[-12:]))

    async def nothing(self, pred, what, quiet=1.0):
        await asyncio.sleep(quiet)
        for e in self.got:
            if pred(e):
                raise AssertionError(f'{self.boundjid}: unexpected {what}: {s(e)}')

    async def iq(self, inner, typ='get', to=None):
        self.seq += 1
        i = f'q{self.seq}'
        t = f" to='{to}'" if to else ''
        self.send_raw(f"<iq type='{typ}' id='{i}'{t}>{inner}</iq>")
        return await self.wait(lambda e: e.tag == C + 'iq' and e.get('id') == i and e.get('type') in ('result', 'error'), f'reply to {inner[:60]}')

    def raw(self, xml):
        self.send_raw(xml)

    async def bye(self):
        self.disconnect()
        await asyncio.wait_for(self.gone, 10)


async def login(user, res):
    c = Client(user, res)
    c.connect((HOST, PORT))
    await asyncio.wait_for(c.started, 15)
    return c


def ok(r, what):
    if r.get('type') != 'result':
        raise AssertionError(f'{what}: expected result, got {s(r)}')
    return r


def err(r, cond, what):
    e = r.find(C + 'error')
    if r.get('type') != 'error' or e is None or e.find(STANZAS + cond) is None:
        raise AssertionError(f'{what}: expected <{cond}/>, got {s(r)}')
    return e


def is_push(jid, **attrs):
    def p(e):
        if e.tag != C + 'iq' or e.get('type') != 'set':
            return False
        it = e.find(f'{RO}query/{RO}item')
        return it is not None and it.get('jid') == jid and all(it.get(k) == v for k, v in attrs.items())
    return p


def is_pres(frm, typ=None, full=False):
    def p(e):
        if e.tag != C + 'presence' or e.get('type') != typ:
            return False
        f = e.get('from', '')
        return f == frm if full else f.split('/')[0] == frm
    return p


def is_msg(frm=None, typ=None, body=None):
    def p(e):
        if e.tag != C + 'message':
            return False
        if typ is not None and e.get('type') != typ:
            return False
        if frm is not None and e.get('from', '').split('/')[0] != frm:
            return False
        return body is None or e.findtext(C + 'body') == body
    return p


def roster_items(r):
    q = r.find(RO + 'query')
    return {} if q is None else {it.get('jid'): it for it in q.findall(RO + 'item')}


async def subscribe_pair(a, b, A, B):
    """a (user A) and b (user B), both available, become mutual contacts."""
    a.raw(f"<presence to='{bare(B)}' type='subscribe'/>")
    await b.wait(is_pres(bare(A), 'subscribe'), 'subscribe')
    b.raw(f"<presence to='{bare(A)}' type='subscribed'/>")
    await a.wait(is_pres(bare(B), 'subscribed'), 'subscribed')
    b.raw(f"<presence to='{bare(A)}' type='subscribe'/>")
    await a.wait(is_pres(bare(B), 'subscribe'), 'subscribe back')
    a.raw(f"<presence to='{bare(B)}' type='subscribed'/>")
    await b.wait(is_pres(bare(A), 'subscribed'), 'subscribed back')


# --- scenarios -------------------------------------------------------------------

async def roster():
    A, B = USERS[0], USERS[1]
    a1, a2, a3 = await login(A, 'one'), await login(A, 'two'), await login(A, 'three')
    ok(await a1.iq("<query xmlns='jabber:iq:roster'/>"), 'roster get')
    ok(await a2.iq("<query xmlns='jabber:iq:roster'/>"), 'roster get (second resource)')
    ok(await a1.iq(f"<query xmlns='jabber:iq:roster'><item jid='{bare(B)}' name='Bob'><group>Friends</group></item></query>", 'set'), 'roster set')
    push = await a2.wait(is_push(bare(B), name='Bob', subscription='none'), 'roster push to the second resource')
    if push.findtext(f'{RO}query/{RO}item/{RO}group') != 'Friends':
        raise AssertionError('push without the group: ' + s(push))
    await a1.wait(is_push(bare(B)), 'roster push to the setting resource')
    # a3 never asked for the roster: not an interested resource (RFC 6121 §2.1.6).
    await a3.nothing(is_push(bare(B)), 'push to a resource that never requested the roster', 0.3)
    items = roster_items(ok(await a1.iq("<query xmlns='jabber:iq:roster'/>"), 'roster get'))
    if bare(B) not in items or items[bare(B)].get('name') != 'Bob':
        raise AssertionError(f'roster get: {list(items)}')
    # Items for foreign domains are fine.
    ok(await a1.iq("<query xmlns='jabber:iq:roster'><item jid='someone@elsewhere.example'/></query>", 'set'), 'foreign item')
    await a2.wait(is_push('someone@elsewhere.example'), 'push of the foreign item')
    ok(await a1.iq(f"<query xmlns='jabber:iq:roster'><item jid='{bare(B)}' subscription='remove'/></query>", 'set'), 'roster remove')
    await a2.wait(is_push(bare(B), subscription='remove'), 'remove push')
    items = roster_items(ok(await a1.iq("<query xmlns='jabber:iq:roster'/>"), 'roster get after remove'))
    if bare(B) in items:
        raise AssertionError('item still there after remove')
    err(await a1.iq(f"<query xmlns='jabber:iq:roster'><item jid='{bare(B)}' subscription='remove'/></query>", 'set'), 'item-not-found', 'remove twice')
    err(await a1.iq("<query xmlns='jabber:iq:roster'/>", 'get', to=bare(B)), 'forbidden', "another user's roster")
    for x in (a1, a2, a3):
        await x.bye()


async def rosterver():
    A = USERS[0]
    a = await login(A, 'v')
    if 'rosterver' not in a.features:
        raise AssertionError(f'rosterver stream feature not offered: {a.features}')
    r = ok(await a.iq("<query xmlns='jabber:iq:roster' ver=''/>"), 'first roster get')
    v0 = r.find(RO + 'query').get('ver')
    if not v0 or roster_items(r):
        raise AssertionError('empty roster needs a version and no items: ' + s(r))
    r = ok(await a.iq(f"<query xmlns='jabber:iq:roster' ver='{v0}'/>"), 'get at v0')
    if len(r):
        raise AssertionError('ver equal: expected an empty result, got ' + s(r))
    ok(await a.iq("<query xmlns='jabber:iq:roster'><item jid='x@elsewhere.example'/></query>", 'set'), 'set')
    push = await a.wait(is_push('x@elsewhere.example'), 'push')
    v1 = push.find(RO + 'query').get('ver')
    if not v1 or v1 == v0:
        raise AssertionError(f'first change must change the version: v0={v0} v1={v1}')
    r = ok(await a.iq(f"<query xmlns='jabber:iq:roster' ver='{v0}'/>"), 'get at stale v0')
    if r.find(RO + 'query').get('ver') != v1 or len(roster_items(r)) != 1:
        raise AssertionError('stale ver: expected the full roster at v1: ' + s(r))
    r = ok(await a.iq(f"<query xmlns='jabber:iq:roster' ver='{v1}'/>"), 'get at v1')
    if len(r):
        raise AssertionError('ver equal after change: expected an empty result: ' + s(r))
    ok(await a.iq("<query xmlns='jabber:iq:roster'><item jid='x@elsewhere.example' subscription='remove'/></query>", 'set'), 'remove')
    r = ok(await a.iq(f"<query xmlns='jabber:iq:roster' ver='{v1}'/>"), 'get after emptying')
    v2 = r.find(RO + 'query').get('ver')
    if v2 in (v0, v1) or roster_items(r):
        raise AssertionError(f'emptying must give a new version: v0={v0} v1={v1} v2={v2}')
    await a.bye()


async def subscription():
    A, B = USERS[0], USERS[1]
    a = await login(A, 'a')
    ok(await a.iq("<query xmlns='jabber:iq:roster'/>"), 'roster get')
    a.raw('<presence/>')
    a.raw(f"<presence to='{bare(B)}' type='subscribe'><status>hi bob</status></presence>")
    await a.wait(is_push(bare(B), subscription='none', ask='subscribe'), 'push none+ask')
    # bob is offline: the request waits for his next login.
    await asyncio.sleep(0.3)
    b = await login(B, 'b')
    items = roster_items(ok(await b.iq("<query xmlns='jabber:iq:roster'/>"), 'bob roster get'))
    if bare(A) in items:
        raise AssertionError('a pending inbound request must not show as a roster item')
    b.raw('<presence/>')
    req = await b.wait(is_pres(bare(A), 'subscribe'), 'pending request redelivered at login')
    if req.findtext(C + 'status') != 'hi bob':
        raise AssertionError('status lost: ' + s(req))
    b.raw(f"<presence to='{bare(A)}' type='subscribed'/>")
    await b.wait(is_push(bare(A), subscription='from'), 'bob push from')
    await a.wait(is_pres(bare(B), 'subscribed'), 'subscribed to alice')
    await a.wait(is_push(bare(B), subscription='to'), 'alice push to')
    await a.wait(is_pres(bare(B), None), "bob's presence after approval")
    # bob subscribes back while alice is online; alice approves: both.
    b.raw(f"<presence to='{bare(A)}' type='subscribe'/>")
    await a.wait(is_pres(bare(B), 'subscribe'), 'subscribe from bob')
    a.raw(f"<presence to='{bare(B)}' type='subscribed'/>")
    await a.wait(is_push(bare(B), subscription='both'), 'alice push both')
    await b.wait(is_push(bare(A), subscription='both'), 'bob push both')
    # A request to a non-existent local account is answered with unsubscribed.
    a.raw(f"<presence to='nobody-here@{DOMAIN}' type='subscribe'/>")
    await a.wait(is_pres(f'nobody-here@{DOMAIN}', 'unsubscribed'), 'unsubscribed from a non-existent user')
    await a.wait(is_push(f'nobody-here@{DOMAIN}', subscription='none', ask=None), 'push clearing ask')
    # bob cancels alice's subscription: alice falls to from, sees bob unavailable.
    b.raw(f"<presence to='{bare(A)}' type='unsubscribed'/>")
    await a.wait(is_push(bare(B), subscription='from'), 'alice push from after unsubscribed')
    await a.wait(is_pres(bare(B), 'unavailable'), 'unavailable after unsubscribed')
    await a.bye()
    await b.bye()


async def preapproval():
    A, B = USERS[0], USERS[1]
    a, b = await login(A, 'a'), await login(B, 'b')
    if 'preapproval' not in b.features:
        raise AssertionError(f'pre-approval stream feature not offered: {b.features}')
    for x in (a, b):
        ok(await x.iq("<query xmlns='jabber:iq:roster'/>"), 'roster get')
        x.raw('<presence/>')
    b.raw(f"<presence to='{bare(A)}' type='subscribed'/>")
    await b.wait(is_push(bare(A), subscription='none', approved='true'), 'push with approved')
    await a.nothing(is_pres(bare(B), 'subscribed'), 'a routed pre-approval', 0.5)
    a.raw(f"<presence to='{bare(B)}' type='subscribe'/>")
    await a.wait(is_pres(bare(B), 'subscribed'), 'automatic approval')
    await a.wait(is_push(bare(B), subscription='to'), 'alice push to')
    await a.wait(is_pres(f'{bare(B)}/b', None, full=True), "bob's presence after automatic approval")
    await b.wait(is_push(bare(A), subscription='from'), 'bob push from')
    await b.nothing(is_pres(bare(A), 'subscribe'), 'pre-approved request shown to the user', 0.3)
    await a.bye()
    await b.bye()


async def presence():
    A, B, Cu = USERS[0], USERS[1], USERS[2]
    a, b = await login(A, 'a'), await login(B, 'b')
    for x in (a, b):
        ok(await x.iq("<query xmlns='jabber:iq:roster'/>"), 'roster get')
        x.raw('<presence/>')
    await subscribe_pair(a, b, A, B)
    await b.bye()
    await a.wait(is_pres(f'{bare(B)}/b', 'unavailable', full=True), 'unavailable on disconnect')
    # Login: broadcast to contacts and probes answered.
    b = await login(B, 'b2')
    b.raw('<presence><show>away</show><status>lunch</status></presence>')
    p = await a.wait(is_pres(f'{bare(B)}/b2', None, full=True), 'broadcast of initial presence')
    if p.findtext(C + 'show') != 'away':
        raise AssertionError('show lost: ' + s(p))
    await b.wait(is_pres(f'{bare(A)}/a', None, full=True), "probe answered with alice's presence")
    await b.wait(is_pres(f'{bare(B)}/b2', None, full=True), 'own presence reflected')
    # Directed presence to a stranger, then unavailable to them on disconnect.
    c = await login(Cu, 'c')
    c.raw('<presence/>')
    await asyncio.sleep(0.2)
    b.raw(f"<presence to='{bare(Cu)}/c'><status>psst</status></presence>")
    await c.wait(is_pres(f'{bare(B)}/b2', None, full=True), 'directed presence')
    b.raw("<presence><show>dnd</show></presence>")
    await a.wait(lambda e: is_pres(f'{bare(B)}/b2', None, full=True)(e) and e.findtext(C + 'show') == 'dnd', 'presence update')
    await c.nothing(lambda e: is_pres(f'{bare(B)}/b2', None, full=True)(e) and e.findtext(C + 'show') == 'dnd', 'broadcast to a non-contact', 0.5)
    await b.bye()
    await a.wait(is_pres(f'{bare(B)}/b2', 'unavailable', full=True), 'unavailable to contact')
    await c.wait(is_pres(f'{bare(B)}/b2', 'unavailable', full=True), 'unavailable to directed-presence recipient')
    await a.bye()
    await c.bye()


async def offline():
    A, B = USERS[0], USERS[1]
    cap = int(USERS[2])
    a = await login(A, 'a')
    a.raw('<presence/>')
    for i in range(cap):
        a.raw(f"<message to='{bare(B)}' type='chat' id='m{i}'><body>m{i}</body></message>")
    a.raw(f"<message to='{bare(B)}' type='headline' id='h'><body>news</body></message>")
    a.raw(f"<message to='{bare(B)}' type='chat' id='over'><body>over</body></message>")
    e = await a.wait(lambda e: e.tag == C + 'message' and e.get('type') == 'error' and e.get('id') == 'over', 'bounce beyond the cap')
    err(e, 'service-unavailable', 'offline cap')
    b = await login(B, 'b')
    await b.nothing(is_msg(bare(A)), 'offline message before initial presence', 0.5)
    b.raw('<presence/>')
    bodies = []
    for i in range(cap):
        m = await b.wait(is_msg(bare(A), 'chat'), f'offline message {i}')
        d = m.find('{urn:xmpp:delay}delay')
        if d is None or d.get('from') != DOMAIN or not d.get('stamp', '').startswith('20'):
            raise AssertionError('no delay stamp: ' + s(m))
        bodies.append(m.findtext(C + 'body'))
    if bodies != [f'm{i}' for i in range(cap)]:
        raise AssertionError(f'order: {bodies}')
    await b.nothing(is_msg(bare(A), 'headline'), 'stored headline', 0.3)
    await b.bye()
    b = await login(B, 'b')
    b.raw('<presence/>')
    await b.nothing(is_msg(bare(A)), 'offline message delivered twice', 1.0)
    await b.bye()
    await a.bye()


async def disco():
    A = USERS[0]
    a = await login(A, 'd')
    r = ok(await a.iq("<query xmlns='http://jabber.org/protocol/disco#info'/>", to=DOMAIN), 'disco#info')
    q = r.find('{http://jabber.org/protocol/disco#info}query')
    ident = q.find('{http://jabber.org/protocol/disco#info}identity')
    if ident is None or (ident.get('category'), ident.get('type'), ident.get('name')) != ('server', 'im', 'xedge'):
        raise AssertionError('identity: ' + s(r))
    feats = {f.get('var') for f in q.findall('{http://jabber.org/protocol/disco#info}feature')}
    want = {'http://jabber.org/protocol/disco#info', 'http://jabber.org/protocol/disco#items', 'urn:xmpp:ping',
            'jabber:iq:version', 'vcard-temp', 'jabber:iq:private', 'urn:xmpp:blocking', 'urn:xmpp:carbons:2', 'msgoffline'}
    if not want <= feats:
        raise AssertionError(f'missing features: {want - feats}')
    ok(await a.iq("<query xmlns='http://jabber.org/protocol/disco#items'/>", to=DOMAIN), 'disco#items')
    r = ok(await a.iq("<query xmlns='http://jabber.org/protocol/disco#info'/>", to=bare(A)), 'disco#info on own account')
    if r.find('{http://jabber.org/protocol/disco#info}query/{http://jabber.org/protocol/disco#info}identity').get('category') != 'account':
        raise AssertionError('account identity: ' + s(r))
    await a.bye()


async def version():
    a = await login(USERS[0], 'v')
    r = ok(await a.iq("<query xmlns='jabber:iq:version'/>", to=DOMAIN), 'version')
    q = r.find('{jabber:iq:version}query')
    if q.findtext('{jabber:iq:version}name') != 'xedge' or not q.findtext('{jabber:iq:version}version'):
        raise AssertionError('version: ' + s(r))
    await a.bye()


async def ping():
    a = await login(USERS[0], 'p')
    r = ok(await a.iq("<ping xmlns='urn:xmpp:ping'/>", to=DOMAIN), 'ping')
    if r.get('from') != DOMAIN:
        raise AssertionError('ping reply from: ' + s(r))
    await a.bye()


async def vcard():
    A, B = USERS[0], USERS[1]
    a, b = await login(A, 'a'), await login(B, 'b')
    r = ok(await a.iq("<vCard xmlns='vcard-temp'/>"), 'empty vcard')
    v = r.find('{vcard-temp}vCard')
    if v is None or len(v):
        raise AssertionError('expected an empty vCard: ' + s(r))
    ok(await a.iq("<vCard xmlns='vcard-temp'><FN>Alice Liddell</FN><NICKNAME>al</NICKNAME></vCard>", 'set'), 'vcard set')
    r = ok(await b.iq("<vCard xmlns='vcard-temp'/>", to=bare(A)), "get another user's vcard")
    if r.findtext('{vcard-temp}vCard/{vcard-temp}FN') != 'Alice Liddell':
        raise AssertionError('vcard: ' + s(r))
    err(await b.iq("<vCard xmlns='vcard-temp'><FN>x</FN></vCard>", 'set', to=bare(A)), 'forbidden', "set another's vcard")
    big = 'A' * 200000
    err(await a.iq(f"<vCard xmlns='vcard-temp'><PHOTO><BINVAL>{big}</BINVAL></PHOTO></vCard>", 'set'), 'not-acceptable', 'oversize vcard')
    await a.bye()
    await b.bye()


async def private():
    a = await login(USERS[0], 'p')
    r = ok(await a.iq("<query xmlns='jabber:iq:private'><prefs xmlns='test:prefs'/></query>"), 'empty get')
    ok(await a.iq("<query xmlns='jabber:iq:private'><prefs xmlns='test:prefs'><nick>Hamlet</nick></prefs></query>", 'set'), 'set')
    r = ok(await a.iq("<query xmlns='jabber:iq:private'><prefs xmlns='test:prefs'/></query>"), 'get')
    if r.findtext('{jabber:iq:private}query/{test:prefs}prefs/{test:prefs}nick') != 'Hamlet':
        raise AssertionError('private get: ' + s(r))
    for ns in ('jabber:client', 'jabber:x:data', 'jabber:iq:roster'):
        err(await a.iq(f"<query xmlns='jabber:iq:private'><x xmlns='{ns}'/></query>", 'set'), 'not-acceptable', f'reserved {ns}')
    await a.bye()


async def blocking():
    A, B = USERS[0], USERS[1]
    a, a2, b = await login(A, 'a'), await login(A, 'a2'), await login(B, 'b')
    for x in (a, a2, b):
        x.raw('<presence/>')
    await subscribe_pair(a, b, A, B)
    r = ok(await a2.iq("<blocklist xmlns='urn:xmpp:blocking'/>"), 'blocklist get')
    b.got.clear()
    ok(await a.iq(f"<block xmlns='urn:xmpp:blocking'><item jid='{bare(B)}'/></block>", 'set'), 'block')
    await a2.wait(lambda e: e.tag == C + 'iq' and e.get('type') == 'set' and e.find('{urn:xmpp:blocking}block') is not None, 'block push')
    await b.wait(is_pres(f'{bare(A)}/a', 'unavailable', full=True), 'unavailable to the newly blocked contact')
    b.raw('<presence><show>chat</show></presence>')
    await a.nothing(lambda e: is_pres(f'{bare(B)}/b', None, full=True)(e) and e.findtext(C + 'show') == 'chat', 'presence from a blocked contact', 0.5)
    a.raw('<presence><show>away</show></presence>')
    await b.nothing(lambda e: is_pres(f'{bare(A)}/a', None, full=True)(e) and e.findtext(C + 'show') == 'away', 'presence to a blocked contact', 0.5)
    r = ok(await a.iq("<blocklist xmlns='urn:xmpp:blocking'/>"), 'blocklist get')
    if [i.get('jid') for i in r.find('{urn:xmpp:blocking}blocklist')] != [bare(B)]:
        raise AssertionError('blocklist: ' + s(r))
    b.raw(f"<message to='{bare(A)}/a' type='chat'><body>let me in</body></message>")
    await a.nothing(is_msg(bare(B)), 'message from a blocked contact', 1.0)
    a.raw(f"<message to='{bare(B)}' type='chat' id='tob'><body>hi</body></message>")
    e = await a.wait(lambda e: e.tag == C + 'message' and e.get('type') == 'error' and e.get('id') == 'tob', 'error for a message to a blocked contact')
    er = err(e, 'not-acceptable', 'message to blocked')
    if er.find('{urn:xmpp:blocking:errors}blocked') is None:
        raise AssertionError('no <blocked/> condition: ' + s(e))
    await b.nothing(is_msg(bare(A), body='hi'), 'message to a blocked contact delivered', 0.3)
    ok(await a.iq(f"<unblock xmlns='urn:xmpp:blocking'><item jid='{bare(B)}'/></unblock>", 'set'), 'unblock')
    await a2.wait(lambda e: e.tag == C + 'iq' and e.get('type') == 'set' and e.find('{urn:xmpp:blocking}unblock') is not None, 'unblock push')
    await b.wait(lambda e: is_pres(f'{bare(A)}/a', None, full=True)(e) and e.findtext(C + 'show') == 'away', 'current presence after unblock')
    b.raw(f"<message to='{bare(A)}/a' type='chat'><body>again</body></message>")
    await a.wait(is_msg(bare(B), body='again'), 'message after unblock')
    for x in (a, a2, b):
        await x.bye()


async def carbons():
    A, B = USERS[0], USERS[1]
    a1, a2, b = await login(A, 'one'), await login(A, 'two'), await login(B, 'b')
    for x in (a1, a2, b):
        x.raw('<presence/>')
    ok(await a2.iq("<enable xmlns='urn:xmpp:carbons:2'/>", 'set'), 'carbons enable')
    await asyncio.sleep(0.2)
    b.raw(f"<message to='{bare(A)}/one' type='chat' id='in'><body>to one</body></message>")
    await a1.wait(is_msg(bare(B), 'chat', 'to one'), 'direct delivery')
    cc = await a2.wait(lambda e: e.tag == C + 'message' and e.find('{urn:xmpp:carbons:2}received') is not None, 'received carbon')
    inner = cc.find('{urn:xmpp:carbons:2}received/{urn:xmpp:forward:0}forwarded/' + C + 'message')
    if inner is None or inner.findtext(C + 'body') != 'to one' or cc.get('from') != bare(A):
        raise AssertionError('received carbon: ' + s(cc))
    a1.raw(f"<message to='{bare(B)}' type='chat' id='out'><body>from one</body></message>")
    await b.wait(is_msg(bare(A), 'chat', 'from one'), 'outgoing delivered')
    cc = await a2.wait(lambda e: e.tag == C + 'message' and e.find('{urn:xmpp:carbons:2}sent') is not None, 'sent carbon')
    inner = cc.find('{urn:xmpp:carbons:2}sent/{urn:xmpp:forward:0}forwarded/' + C + 'message')
    if inner is None or inner.findtext(C + 'body') != 'from one':
        raise AssertionError('sent carbon: ' + s(cc))
    a1.raw(f"<message to='{bare(B)}' type='chat'><body>secret</body><private xmlns='urn:xmpp:carbons:2'/></message>")
    await b.wait(is_msg(bare(A), 'chat', 'secret'), 'private message delivered')
    await a2.nothing(lambda e: e.find('{urn:xmpp:carbons:2}sent') is not None, 'carbon of a private message', 0.5)
    for x in (a1, a2, b):
        await x.bye()


async def removal_fill():
    A, B = USERS[0], USERS[1]
    a = await login(A, 'a')
    ok(await a.iq(f"<query xmlns='jabber:iq:roster'><item jid='{bare(B)}' name='B'/></query>", 'set'), 'roster set')
    ok(await a.iq("<vCard xmlns='vcard-temp'><FN>Gone Soon</FN></vCard>", 'set'), 'vcard set')
    ok(await a.iq("<query xmlns='jabber:iq:private'><p xmlns='test:p'>x</p></query>", 'set'), 'private set')
    ok(await a.iq("<block xmlns='urn:xmpp:blocking'><item jid='spam@elsewhere.example'/></block>", 'set'), 'block')
    await a.bye()
    b = await login(B, 'b')
    b.raw(f"<message to='{bare(A)}' type='chat'><body>for later</body></message>")
    await asyncio.sleep(0.5)
    await b.bye()


async def removal_check():
    A = USERS[0]
    a = await login(A, 'a')
    r = ok(await a.iq("<query xmlns='jabber:iq:roster' ver=''/>"), 'roster get')
    if roster_items(r):
        raise AssertionError('roster survived account removal: ' + s(r))
    r = ok(await a.iq("<vCard xmlns='vcard-temp'/>"), 'vcard get')
    if len(r.find('{vcard-temp}vCard')):
        raise AssertionError('vcard survived account removal: ' + s(r))
    r = ok(await a.iq("<query xmlns='jabber:iq:private'><p xmlns='test:p'/></query>"), 'private get')
    if r.findtext('{jabber:iq:private}query/{test:p}p'):
        raise AssertionError('private data survived account removal: ' + s(r))
    r = ok(await a.iq("<blocklist xmlns='urn:xmpp:blocking'/>"), 'blocklist get')
    if len(r.find('{urn:xmpp:blocking}blocklist')):
        raise AssertionError('block list survived account removal: ' + s(r))
    a.raw('<presence/>')
    await a.nothing(is_msg(body='for later'), 'offline message of the removed account', 1.0)
    await a.bye()


async def main():
    fn = globals().get(SCENARIO)
    if fn is None:
        print(f'unknown scenario {SCENARIO}')
        return 2
    try:
        await asyncio.wait_for(fn(), 90)
    except (AssertionError, asyncio.TimeoutError) as e:
        print(f'FAIL {SCENARIO}: {e!r}')
        return 1
    print('OK')
    return 0


if __name__ == '__main__':
    logging.basicConfig(level=logging.ERROR)
    sys.exit(asyncio.get_event_loop().run_until_complete(main()))
