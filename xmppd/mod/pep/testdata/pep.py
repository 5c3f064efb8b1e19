#!/usr/bin/python3
"""PEP scenarios for xmppd, driven with slixmpp's own PEP plugins (XEP-0060, 0084,
0115, 0163).

usage: pep.py PHASE HOST PORT DOMAIN PASSWORD ALICE BOB [BOB_PORT]

publish: alice and bob become mutual contacts; bob advertises +notify for avatar
metadata and the OMEMO device list through entity caps; alice publishes an avatar
(data and metadata, slixmpp's XEP-0084 plugin), an OMEMO device list with
publish-options (access model open) and a Bookmarks 2 item; bob receives the
notifications; alice's disco#info shows PEP.
restart: after an xmppd restart bob reads alice's items back, a new bob resource with
+notify caps is sent the last items on its initial presence, and alice's
bookmarks are still there.
cluster: alice on one node (PORT), bob on another (BOB_PORT): bob, a contact with
+notify caps, receives alice's device list notification and reads it through his node.
Prints OK and exits 0, or says what went wrong and exits 1. Every wait is bounded.
"""
import asyncio
import copy
import logging
import ssl
import sys
import time
import xml.etree.ElementTree as ET

from slixmpp import ClientXMPP

PHASE, HOST, PORT, DOMAIN, PW, A, B = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
BPORT = int(sys.argv[8]) if len(sys.argv) > 8 else PORT
C = '{jabber:client}'
PS = 'http://jabber.org/protocol/pubsub'
EV = '{http://jabber.org/protocol/pubsub#event}'
DI = '{http://jabber.org/protocol/disco#info}'
META = 'urn:xmpp:avatar:metadata'
DATA = 'urn:xmpp:avatar:data'
DEV = 'eu.siacs.conversations.axolotl.devicelist'
BM = 'urn:xmpp:bookmarks:1'
ROOM = f'room@conference.{DOMAIN}'


def bare(u):
    return f'{u}@{DOMAIN}'


def s(e):
    return ET.tostring(e, encoding='unicode')


class Client(ClientXMPP):
    def __init__(self, user, res):
        super().__init__(f'{user}@{DOMAIN}/{res}', PW)
        self.auto_authorize = None
        self.auto_subscribe = False
        for p in ('xep_0030', 'xep_0060', 'xep_0115', 'xep_0163', 'xep_0084'):
            self.register_plugin(p)
        self.got = []
        self.seq = 0
        self.started = asyncio.get_event_loop().create_future()
        self.add_filter('in', self._record)
        self.add_event_handler('session_start', lambda _: self.started.done() or self.started.set_result(True))
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE

    def _record(self, st):
        self.got.append(copy.deepcopy(st.xml))
        return st

    async def wait(self, pred, what, timeout=8.0):
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

    async def iq(self, inner, typ='get', to=None):
        self.seq += 1
        i = f'q{self.seq}'
        t = f" to='{to}'" if to else ''
        self.send_raw(f"<iq type='{typ}' id='{i}'{t}>{inner}</iq>")
        r = await self.wait(lambda e: e.tag == C + 'iq' and e.get('id') == i and e.get('type') in ('result', 'error'), f'reply to {inner[:60]}')
        if r.get('type') != 'result':
            raise AssertionError(f'{inner[:80]}: {s(r)}')
        return r

    async def notify_for(self, *nodes):
        for n in nodes:
            self['xep_0163'].add_interest(n)
        await self['xep_0115'].update_caps(broadcast=False)


async def login(user, res, port=PORT):
    c = Client(user, res)
    c.connect((HOST, port))
    await asyncio.wait_for(c.started, 15)
    return c


def is_pres(frm, typ):
    return lambda e: e.tag == C + 'presence' and e.get('from', '').split('/')[0] == frm and e.get('type') == typ


def event(frm, node):
    def p(e):
        it = e.find(f'{EV}event/{EV}items')
        return e.tag == C + 'message' and e.get('from') == frm and it is not None and it.get('node') == node and it.find(EV + 'item') is not None
    return p


def items(r, node):
    its = r.find(f'{{{PS}}}pubsub/{{{PS}}}items')
    if its is None or its.get('node') != node:
        raise AssertionError('no items: ' + s(r))
    return its.findall(f'{{{PS}}}item')


def devicelist_publish():
    return (f"<pubsub xmlns='{PS}'><publish node='{DEV}'><item id='current'><list xmlns='{DEV}'><device id='4242'/></list></item></publish>"
            f"<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{PS}#publish-options</value></field>"
            "<field var='pubsub#access_model'><value>open</value></field></x></publish-options></pubsub>")


def bookmark_publish():
    return (f"<pubsub xmlns='{PS}'><publish node='{BM}'><item id='{ROOM}'><conference xmlns='{BM}' name='Room' autojoin='true'><nick>al</nick></conference></item></publish>"
            f"<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{PS}#publish-options</value></field>"
            "<field var='pubsub#persist_items'><value>true</value></field><field var='pubsub#max_items'><value>max</value></field>"
            "<field var='pubsub#send_last_published_item'><value>never</value></field><field var='pubsub#access_model'><value>whitelist</value></field></x></publish-options></pubsub>")


async def contacts(a, b, across=False):
    """a (alice) and b (bob) become mutual contacts; b advertises +notify caps.
    across: a and b are on different nodes."""
    await b.notify_for(META, DEV)
    a.send_raw('<presence/>')
    b.send_presence()
    if across:
        await sees_available(a, b)
    a.send_raw(f"<presence to='{bare(B)}' type='subscribe'/>")
    await b.wait(is_pres(bare(A), 'subscribe'), 'subscribe')
    b.send_raw(f"<presence to='{bare(A)}' type='subscribed'/>")
    b.send_raw(f"<presence to='{bare(A)}' type='subscribe'/>")
    await a.wait(is_pres(bare(B), 'subscribe'), 'subscribe back')
    a.send_raw(f"<presence to='{bare(B)}' type='subscribed'/>")
    await b.wait(is_pres(bare(A), 'subscribed'), 'subscribed')


async def publish():
    a, b = await login(A, 'pc'), await login(B, 'phone')
    await contacts(a, b)
    # The account's disco#info advertises PEP (what Conversations' server info checks).
    r = await a.iq(f"<query xmlns='{DI[1:-1]}'/>", to=bare(A))
    feats = {f.get('var') for f in r.iter(DI + 'feature')}
    ids = {(i.get('category'), i.get('type')) for i in r.iter(DI + 'identity')}
    for f in (PS + '#publish', PS + '#publish-options', BM + '#compat'):
        if f not in feats:
            raise AssertionError(f'{f} not advertised: {s(r)}')
    if ('pubsub', 'pep') not in ids:
        raise AssertionError('no pubsub/pep identity: ' + s(r))
    # Avatar through slixmpp's XEP-0084 plugin, then the OMEMO device list.
    await a['xep_0084'].publish_avatar(b'\x89PNG fake avatar', timeout=8)
    await a['xep_0084'].publish_avatar_metadata(items=[{'id': 'avatarsha1', 'type': 'image/png', 'bytes': 16}], timeout=8)
    await a.iq(devicelist_publish(), 'set')
    e = await b.wait(event(bare(A), META), 'avatar metadata notification')
    if e.find(f'{EV}event/{EV}items/{EV}item').get('id') != 'avatarsha1':
        raise AssertionError('metadata item id: ' + s(e))
    e = await b.wait(event(bare(A), DEV), 'device list notification')
    if e.find(f'.//{{{DEV}}}device').get('id') != '4242':
        raise AssertionError('device list: ' + s(e))
    # Bookmarks 2 with the options XEP-0402 asks for.
    await a.iq(bookmark_publish(), 'set')
    a.disconnect()
    b.disconnect()


async def restart():
    b = await login(B, 'phone')
    got = items(await b.iq(f"<pubsub xmlns='{PS}'><items node='{META}'/></pubsub>", to=bare(A)), META)
    if [i.get('id') for i in got] != ['avatarsha1']:
        raise AssertionError('metadata after restart: ' + ' '.join(s(i) for i in got))
    got = items(await b.iq(f"<pubsub xmlns='{PS}'><items node='{DATA}' max_items='1'/></pubsub>", to=bare(A)), DATA)
    if len(got) != 1:
        raise AssertionError('avatar data after restart')
    # A new resource with +notify caps gets the last items on its initial presence.
    b2 = await login(B, 'tablet')
    await b2.notify_for(META, DEV)
    b2.send_presence()
    await b2.wait(event(bare(A), DEV), 'last device list on presence')
    await b2.wait(event(bare(A), META), 'last avatar metadata on presence')
    a = await login(A, 'pc')
    got = items(await a.iq(f"<pubsub xmlns='{PS}'><items node='{BM}'/></pubsub>"), BM)
    if len(got) != 1 or got[0].get('id') != ROOM:
        raise AssertionError('bookmarks after restart')
    # Whitelist: bob may not read alice's bookmarks.
    b.send_raw(f"<iq type='get' id='bm' to='{bare(A)}'><pubsub xmlns='{PS}'><items node='{BM}'/></pubsub></iq>")
    await b.wait(lambda e: e.get('id') == 'bm' and e.get('type') == 'error', 'bookmarks refused to a contact')
    for c in (a, b, b2):
        c.disconnect()


async def sees_available(a, b):
    """Waits until a's node sees b's session available (and so interested: b's
    node publishes the roster request before the presence, in order). Session
    rows reach the other nodes asynchronously, and a subscription request that
    a's node routes while it sees no interested session of b is stored until b's
    next login (RFC 6121 3.1.3), which this script never does. A chat message to
    b's bare JID reaches b only once a's node sees b available (before, it is
    stored offline), so a sends one until b gets one."""
    for k in range(100):
        a.send_raw(f"<message to='{bare(B)}' type='chat'><body>sync-{k}</body></message>")
        try:
            await b.wait(lambda e: e.tag == C + 'message' and (e.findtext(C + 'body') or '').startswith('sync-'), 'sync message', timeout=0.2)
            return
        except AssertionError:
            pass
    raise AssertionError(f"{a.boundjid}: its node never saw {b.boundjid} available")


async def cluster():
    a, b = await login(A, 'pc'), await login(B, 'phone', BPORT)
    await contacts(a, b, across=True)
    await a.iq(devicelist_publish(), 'set')
    e = await b.wait(event(bare(A), DEV), 'device list notification across nodes')
    if e.find(f'.//{{{DEV}}}device').get('id') != '4242':
        raise AssertionError('device list: ' + s(e))
    got = items(await b.iq(f"<pubsub xmlns='{PS}'><items node='{DEV}'/></pubsub>", to=bare(A)), DEV)
    if [i.get('id') for i in got] != ['current']:
        raise AssertionError('device list read on the other node')
    a.disconnect()
    b.disconnect()


async def main():
    try:
        await asyncio.wait_for(globals()[PHASE](), 60)
    except (AssertionError, asyncio.TimeoutError) as e:
        print(f'FAIL {PHASE}: {e!r}')
        return 1
    print('OK')
    return 0


if __name__ == '__main__':
    logging.basicConfig(level=logging.ERROR)
    sys.exit(asyncio.get_event_loop().run_until_complete(main()))
