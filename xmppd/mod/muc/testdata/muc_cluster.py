#!/usr/bin/python3
"""MUC across an xmppd cluster, driven with slixmpp's xep_0045 and xep_0313 plugins.

usage: muc_cluster.py PHASE DOMAIN PASSWORD HOST:PORT1 HOST:PORT2 HOST:PORT3

PHASE "live": alice (node 2) creates a persistent room, bob (node 3), carol and
dave (node 1, the raft leader) join; everyone sees everyone; messages sent
through the three nodes reach every occupant with one stanza-id by the room; bob
pages the room's archive (MAM, RSM max 2) and finds the same ids. dave cannot
take bob's nick (conflict); bob renames
himself to robert and back (everyone, on every node, sees 303 with the new
nick, then the new nick). Then the script
prints KILL and waits for a line on stdin (the test kills node 1): alice and bob
each get exactly one unavailable presence for carol and for dave, the room keeps
working, its occupant list is alice and bob, and carol, back through node 2,
joins with her old nick.
PHASE "after" (after a restart of the whole cluster): the room and its name are
back, its archive still pages, alice and bob rejoin through nodes 2 and 3 and talk.
Prints OK and exits 0, or prints what went wrong and exits 1. Every wait is bounded.
"""
import asyncio
import logging
import ssl
import sys
import traceback

from slixmpp import ClientXMPP
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

PHASE, DOMAIN, PW = sys.argv[1], sys.argv[2], sys.argv[3]
NODES = [(a.rsplit(':', 1)[0], int(a.rsplit(':', 1)[1])) for a in sys.argv[4:7]]
ROOM = 'cluster@conference.' + DOMAIN
T = 10
LOSS = 30  # node loss detection plus the removal, bounded


class Client(ClientXMPP):
    def __init__(self, user):
        super().__init__(f'{user}@{DOMAIN}/muc', PW)
        for p in ('xep_0030', 'xep_0045', 'xep_0004', 'xep_0059', 'xep_0313', 'xep_0359'):
            self.register_plugin(p)
        self.msgs = asyncio.Queue()
        self.pres = []  # (nick, type, status codes, item nick)
        self.pres_event = asyncio.Event()
        # Error presences without a MUC element fire no slixmpp event: a raw handler.
        self.errors = asyncio.Queue()
        self.register_handler(Callback('presence errors', StanzaPath('presence@type=error'), self.errors.put_nowait))
        self.started = asyncio.get_event_loop().create_future()
        self.add_event_handler('session_start', self._start)
        self.add_event_handler('failed_auth', lambda _: self.started.done() or self.started.set_exception(AssertionError('auth failed')))
        self.add_event_handler('groupchat_message', lambda m: m['body'] and self.msgs.put_nowait(m))
        self.add_event_handler(f'muc::{ROOM}::presence', self._presence)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE

    def _start(self, _):
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)

    def _presence(self, p):
        item = p.xml.find('{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}item')
        self.pres.append((p['from'].resource, p['type'], codes(p), item.get('nick') if item is not None else None))
        self.pres_event.set()

    async def wait_presence(self, pred, what, timeout=T):
        """Waits (bounded) until pred(list of (nick, type)) holds."""
        async def loop():
            while not pred(self.pres):
                self.pres_event.clear()
                await self.pres_event.wait()
        try:
            await asyncio.wait_for(loop(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f'{self.boundjid.user}: {what}; presences seen: {self.pres}')

    async def body(self, want):
        while True:
            m = await asyncio.wait_for(self.msgs.get(), T)
            if m['body'] == want and not m.get_plugin('delay', check=True):
                return m


async def login(user, node):
    c = Client(user)
    c.connect(NODES[node])
    await asyncio.wait_for(c.started, 15)
    return c


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def codes(p):
    return {int(x) for x in p['muc']['status_codes']}


def count(seen, nick, typ):
    return sum(1 for n, t, _, _ in seen if n == nick and t == typ)


def renamed(seen, old, new):
    """The 303 entry of old's change to new once new's presence followed it, else None."""
    for i, (n, t, c, item) in enumerate(seen):
        if n == old and t == 'unavailable' and 303 in c and item == new:
            if any(n2 == new and t2 == 'available' for n2, t2, _, _ in seen[i + 1:]):
                return seen[i]
    return None


async def archive(c, want):
    """Pages the room's archive two at a time until it holds `want` messages
    (bounded: records are written asynchronously by each sender's node)."""
    for _ in range(50):
        bodies, ids, after, pages = [], [], None, 0
        while pages < 10:
            rsm = {'max': 2}
            if after:
                rsm['after'] = after
            r = await c['xep_0313'].retrieve(jid=ROOM, rsm=rsm, timeout=T)
            pages += 1
            for m in r['mam']['results']:
                bodies.append(m['mam_result']['forwarded']['stanza']['body'])
                ids.append(m['mam_result']['id'])
            fin = r['mam_fin']
            if r.xml.find('{urn:xmpp:mam:2}fin').get('complete') == 'true':
                break
            after = fin['rsm']['last']
        if len(bodies) >= want:
            check(int(fin['rsm']['count']) == want, f"archive count {fin['rsm']['count']}, want {want}")
            check(pages == (want + 1) // 2, f'{pages} pages of 2 for {want} messages')
            return bodies, ids
        await asyncio.sleep(0.1)
    raise AssertionError(f'room archive has {bodies}, want {want} messages')


async def live():
    a, b, c, d = await login('alice', 1), await login('bob', 2), await login('carol', 0), await login('dave', 0)
    everyone = (a, b, c, d)
    nicks = ['alice', 'bob', 'carol', 'dave']
    pres, _, _, _ = await a['xep_0045'].join_muc_wait(ROOM, 'alice', maxstanzas=0, timeout=T)
    check({110, 201} <= codes(pres), f'creation codes {codes(pres)}')
    form = await a['xep_0045'].get_room_config(ROOM, timeout=T)
    form['type'] = 'submit'
    form.set_values({'muc#roomconfig_persistentroom': True, 'muc#roomconfig_roomname': 'Cluster Room'})
    await a['xep_0045'].set_room_config(ROOM, form, timeout=T)
    for cl, nick in ((b, 'bob'), (c, 'carol'), (d, 'dave')):
        pres, _, occ, _ = await cl['xep_0045'].join_muc_wait(ROOM, nick, maxstanzas=0, timeout=T)
        check(110 in codes(pres), f'{nick}: no 110')
    # Everyone sees everyone, whichever node they came through.
    for cl in everyone:
        await cl.wait_presence(lambda s: all(count(s, n, 'available') >= 1 for n in nicks), 'not every occupant seen')
    # One message through each node reaches every occupant with one stanza-id.
    sent = [(a, 'through node2'), (b, 'through node3'), (c, 'through node1')]
    sids = []
    for sender, text in sent:
        sender.send_message(mto=ROOM, mbody=text, mtype='groupchat')
        ids = set()
        for cl in everyone:
            m = await cl.body(text)
            check(m['from'] == ROOM + '/' + sender.boundjid.user, f'from {m["from"]}')
            check(m['stanza_id']['by'] == ROOM, f'stanza-id by {m["stanza_id"]["by"]!r}')
            ids.add(m['stanza_id']['id'])
        check(len(ids) == 1 and '' not in ids, f'{text}: stanza-ids {ids}')
        sids.append(ids.pop())
    # bob pages the room archive through node 3.
    bodies, ids = await archive(b, 3)
    check(bodies == [t for _, t in sent], f'archive bodies {bodies}')
    check(ids == sids, f'archive ids {ids} != stanza-ids {sids}')

    # Nick change: bob's nick (through node 3) is taken for dave (node 1); bob
    # renames himself and back, everyone, on every node, sees both (110 on his
    # own copies).
    d.send_presence(pto=ROOM + '/bob')
    err = await asyncio.wait_for(d.errors.get(), T)
    check(err['from'] == ROOM + '/bob' and err['error']['condition'] == 'conflict', f'dave took bob: {err}')
    for old, new in (('bob', 'robert'), ('robert', 'bob')):
        b.send_presence(pto=ROOM + '/' + new)
        for cl in everyone:
            await cl.wait_presence(lambda s: renamed(s, old, new), f'rename {old} to {new} not seen')
            check((110 in renamed(cl.pres, old, new)[2]) == (cl is b), f'{cl.boundjid.user}: 110 on the rename')

    print('KILL', flush=True)
    line = await asyncio.wait_for(asyncio.get_event_loop().run_in_executor(None, sys.stdin.readline), 60)
    check(line.strip() == 'GO', f'test said {line!r}')
    for cl in (a, b):
        await cl.wait_presence(lambda s: count(s, 'carol', 'unavailable') >= 1 and count(s, 'dave', 'unavailable') >= 1,
                               'lost occupants not removed', timeout=LOSS)
    # The room keeps working; the round trip orders it after any late duplicate
    # sent by the same survivor.
    b.send_message(mto=ROOM, mbody='after the loss', mtype='groupchat')
    for cl in (a, b):
        await cl.body('after the loss')
    a.send_message(mto=ROOM, mbody='still here', mtype='groupchat')
    for cl in (a, b):
        await cl.body('still here')
    for cl in (a, b):
        for nick in ('carol', 'dave'):
            n = count(cl.pres, nick, 'unavailable')
            check(n == 1, f'{cl.boundjid.user} got {n} unavailable presences for {nick}')
    items = await a['xep_0030'].get_items(jid=ROOM, timeout=T)
    occ = sorted(i[0] for i in items['disco_items']['items'])
    check(occ == [ROOM + '/alice', ROOM + '/bob'], f'occupants after the loss: {occ}')
    # No ghost holds carol's nick: back through node 2, she joins with it.
    c2 = await login('carol', 1)
    pres, _, occ, _ = await c2['xep_0045'].join_muc_wait(ROOM, 'carol', maxstanzas=0, timeout=T)
    check(110 in codes(pres), 'carol rejoin: no 110')
    others = sorted(o['from'].resource for o in occ if o['from'].resource != 'carol')
    check(others == ['alice', 'bob'], f'carol saw {[str(o["from"]) for o in occ]}')
    for cl in (a, b):
        await cl.wait_presence(lambda s: count(s, 'carol', 'available') >= 2, 'carol back not seen')
    for cl in (a, b, c2):
        cl.disconnect()


async def after():
    a, b = await login('alice', 1), await login('bob', 2)
    info = await a['xep_0030'].get_info(jid=ROOM, timeout=T)
    names = [i[3] for i in info['disco_info']['identities']]
    check('Cluster Room' in names, f'room name after the restart: {names}')
    check('muc_persistent' in info['disco_info']['features'], 'room not persistent after the restart')
    bodies, _ = await archive(b, 5)
    check(bodies == ['through node2', 'through node3', 'through node1', 'after the loss', 'still here'], f'archive after the restart {bodies}')
    pres, _, _, _ = await a['xep_0045'].join_muc_wait(ROOM, 'alice', maxstanzas=0, timeout=T)
    check(201 not in codes(pres) and pres['muc']['affiliation'] == 'owner', f'alice after the restart: {codes(pres)} {pres["muc"]["affiliation"]}')
    await b['xep_0045'].join_muc_wait(ROOM, 'bob', maxstanzas=0, timeout=T)
    a.send_message(mto=ROOM, mbody='back again', mtype='groupchat')
    await b.body('back again')
    for cl in (a, b):
        cl.disconnect()


async def main():
    try:
        await asyncio.wait_for({'live': live, 'after': after}[PHASE](), 120)
    except Exception as e:
        traceback.print_exc()
        print(f'FAIL {PHASE}: {e!r}', flush=True)
        sys.exit(1)
    print('OK', flush=True)


if __name__ == '__main__':
    logging.basicConfig(level=logging.ERROR)
    asyncio.get_event_loop().run_until_complete(main())
