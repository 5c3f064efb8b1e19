#!/usr/bin/python3
"""Puts data into a real XMPP server with slixmpp clients, or checks it is there.

usage: accounts.py populate|verify HOST PORT DOMAIN [--offline] [--no-block]

Users alice, bob, carol (passwords in PASSWORDS) must exist. populate, as the
clients themselves would: alice and bob subscribe to each other (both), alice
adds dave@remote.example (name, two groups) and asks for his presence (pending
out), carol asks for alice's presence and alice does not answer (pending in at
alice), alice sets her vCard, stores bookmarks in private XML storage, blocks
spam@bad.example (XEP-0191), and bob writes to carol while she is offline.

verify logs each user in with the same password (SCRAM) and checks all of that
is there: roster items with names, groups and subscription states, the pending
request redelivered to alice, vCard, private XML, block list, carol's offline
message (--offline; it is delivered once), the block list unless --no-block
(Prosody's export has none). It prints PASS or what differs, exit 1. Every wait is bounded.
"""
import asyncio
import copy
import logging
import ssl
import sys
import time
import xml.etree.ElementTree as ET

from slixmpp import ClientXMPP

MODE, HOST, PORT, DOMAIN = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
PASSWORDS = {'alice': "al1ce pw&<'", 'bob': 'b0b-secret', 'carol': 'carol'}
C = '{jabber:client}'
RO = '{jabber:iq:roster}'
logging.basicConfig(level=logging.ERROR, stream=sys.stderr)


def bare(u):
    return f'{u}@{DOMAIN}'


def s(e):
    return ET.tostring(e, encoding='unicode')


class Client(ClientXMPP):
    def __init__(self, user):
        super().__init__(bare(user) + '/mig', PASSWORDS[user])
        self.auto_authorize = None
        self.auto_subscribe = False
        self.got = []
        self.seq = 0
        self.started = asyncio.get_event_loop().create_future()
        self.add_filter('in', self._record)
        self.add_event_handler('session_start', lambda _: self.started.done() or self.started.set_result(True))
        self.add_event_handler('failed_all_auth', lambda _: self.started.done() or self.started.set_exception(AssertionError(f'{user}: authentication failed')))
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE

    def _record(self, st):
        self.got.append(copy.deepcopy(st.xml))
        return st

    async def login(self, presence=True):
        self.connect((HOST, PORT))
        await asyncio.wait_for(self.started, 40)
        await self.iq("<query xmlns='jabber:iq:roster'/>")  # interested: roster pushes come (RFC 6121 2.1.6)
        if presence:
            self.send_raw('<presence/>')

    async def wait(self, pred, what, timeout=20.0):
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
        raise AssertionError(f'{self.boundjid}: timed out waiting for {what}; received: ' + ' | '.join(s(e) for e in self.got[-10:]))

    async def iq(self, inner, typ='get'):
        self.seq += 1
        i = f'm{self.seq}'
        self.send_raw(f"<iq type='{typ}' id='{i}'>{inner}</iq>")
        r = await self.wait(lambda e: e.tag == C + 'iq' and e.get('id') == i and e.get('type') in ('result', 'error'), f'reply to {inner[:50]}')
        if r.get('type') != 'result':
            raise AssertionError(f'{self.boundjid}: {inner[:60]} failed: {s(r)}')
        return r

    async def bye(self):
        self.disconnect()
        await asyncio.sleep(0.2)


async def populate():
    a, b, c = Client('alice'), Client('bob'), Client('carol')
    await a.login()
    await b.login()
    # alice <-> bob: both, with names and groups.
    await a.iq(f"<query xmlns='jabber:iq:roster'><item jid='{bare('bob')}' name='Bobby'><group>Friends</group></item></query>", 'set')
    await b.iq(f"<query xmlns='jabber:iq:roster'><item jid='{bare('alice')}' name='Alice'><group>Friends</group></item></query>", 'set')
    a.send_raw(f"<presence to='{bare('bob')}' type='subscribe'/>")
    await b.wait(lambda e: e.tag == C + 'presence' and e.get('type') == 'subscribe', 'subscribe from alice')
    b.send_raw(f"<presence to='{bare('alice')}' type='subscribed'/>")
    b.send_raw(f"<presence to='{bare('alice')}' type='subscribe'/>")
    await a.wait(lambda e: e.tag == C + 'presence' and e.get('type') == 'subscribe', 'subscribe from bob')
    a.send_raw(f"<presence to='{bare('bob')}' type='subscribed'/>")
    # alice -> dave@remote.example: pending out, name and two groups.
    await a.iq("<query xmlns='jabber:iq:roster'><item jid='dave@remote.example' name='Dave'><group>Work</group><group>Old</group></item></query>", 'set')
    a.send_raw("<presence to='dave@remote.example' type='subscribe'/>")
    # vCard, private XML, block list.
    await a.iq("<vCard xmlns='vcard-temp'><FN>Alice Liddell</FN><N><GIVEN>Alice</GIVEN><FAMILY>Liddell</FAMILY></N><NICKNAME>al</NICKNAME></vCard>", 'set')
    await a.iq("<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'><conference jid='room@conference.example' name='The room' autojoin='true'><nick>al</nick></conference></storage></query>", 'set')
    await a.iq("<block xmlns='urn:xmpp:blocking'><item jid='spam@bad.example'/></block>", 'set')
    # Wait until bob's view is both: the roster push for alice with subscription both.
    await b.wait(lambda e: e.tag == C + 'iq' and e.get('type') == 'set' and any(
        i.get('subscription') == 'both' for i in e.iter(RO + 'item')), 'roster push both at bob')
    await a.bye()
    # carol asks for alice's presence while alice is offline (pending in at alice).
    await c.login()
    c.send_raw(f"<presence to='{bare('alice')}' type='subscribe'><status>carol here</status></presence>")
    await c.iq("<query xmlns='jabber:iq:roster'/>")  # a round trip after the subscribe
    await c.bye()
    # bob writes to carol, offline now.
    b.send_raw(f"<message to='{bare('carol')}' type='chat' id='off1'><body>hello carol, you are offline</body></message>")
    await b.iq("<query xmlns='jabber:iq:roster'/>")
    await asyncio.sleep(0.5)  # Prosody and ejabberd store asynchronously
    await b.bye()


def item(r, j):
    for i in r.iter(RO + 'item'):
        if i.get('jid') == j:
            return i
    return None


async def verify():
    errors = []
    a = Client('alice')
    await a.login(presence=False)
    r = await a.iq("<query xmlns='jabber:iq:roster'/>")
    bob = item(r, bare('bob'))
    if bob is None or bob.get('subscription') != 'both' or bob.get('name') != 'Bobby' or [g.text for g in bob.iter(RO + 'group')] != ['Friends']:
        errors.append('alice: roster item bob: ' + (s(bob) if bob is not None else 'missing'))
    dave = item(r, 'dave@remote.example')
    if dave is None or dave.get('subscription') not in (None, 'none') or dave.get('ask') != 'subscribe' or sorted(g.text for g in dave.iter(RO + 'group')) != ['Old', 'Work']:
        errors.append('alice: roster item dave: ' + (s(dave) if dave is not None else 'missing'))
    v = await a.iq("<vCard xmlns='vcard-temp'/>")
    if 'Alice Liddell' not in s(v) or 'Liddell</' not in s(v):
        errors.append('alice: vCard: ' + s(v))
    p = await a.iq("<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>")
    if 'room@conference.example' not in s(p) or 'autojoin' not in s(p):
        errors.append('alice: private: ' + s(p))
    bl = await a.iq("<blocklist xmlns='urn:xmpp:blocking'/>")
    if '--no-block' not in sys.argv and 'spam@bad.example' not in s(bl):
        errors.append('alice: block list: ' + s(bl))
    # The pending request from carol comes again at initial presence.
    a.send_raw('<presence/>')
    try:
        pr = await a.wait(lambda e: e.tag == C + 'presence' and e.get('type') == 'subscribe', 'pending subscribe from carol')
        if not pr.get('from', '').startswith(bare('carol')):
            errors.append('alice: pending request from ' + pr.get('from', ''))
    except AssertionError as e:
        errors.append(str(e))
    await a.bye()
    b = Client('bob')
    await b.login(presence=False)
    r = await b.iq("<query xmlns='jabber:iq:roster'/>")
    al = item(r, bare('alice'))
    if al is None or al.get('subscription') != 'both' or al.get('name') != 'Alice':
        errors.append('bob: roster item alice: ' + (s(al) if al is not None else 'missing'))
    await b.bye()
    if '--offline' in sys.argv:
        c = Client('carol')
        await c.login()
        try:
            m = await c.wait(lambda e: e.tag == C + 'message' and e.find(C + 'body') is not None, 'offline message')
            if m.find(C + 'body').text != 'hello carol, you are offline' or not m.get('from', '').startswith(bare('bob')):
                errors.append('carol: offline message: ' + s(m))
        except AssertionError as e:
            errors.append(str(e))
        await c.bye()
    if errors:
        raise AssertionError('; '.join(errors))


async def main():
    await (populate() if MODE == 'populate' else verify())


try:
    asyncio.run(asyncio.wait_for(main(), 150))
except Exception as e:  # noqa: BLE001 - everything goes to the Go test
    import traceback
    traceback.print_exc()
    print('FAIL:', e)
    sys.exit(1)
print('PASS')
