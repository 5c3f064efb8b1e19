#!/usr/bin/python3
"""MUC (XEP-0045) scenarios for xmppd, driven with slixmpp's xep_0045 plugin.

usage: muc.py PHASE HOST PORT DOMAIN PASSWORD ALICE BOB CAROL

PHASE "create": alice creates a locked room (201) and configures it persistent,
bob joins, a groupchat message reaches both, carol hits a nick conflict and
joins with history (maxstanzas), a private message goes through the room,
groupchat messages reach every occupant, alice makes bob a member and kicks carol (307), disco lists the
service and the room, XEP-0410 self-pings answer joined / not joined; a second
persistent room with archiving turned off in its form (muc#roomconfig_enablearchiving)
stamps no stanza-id and lists no MAM in disco#info, where the lobby does both.
PHASE "after" (after an xmppd restart): the room, its name and bob's membership
are still there; alice (still owner) and bob rejoin and exchange a message; the
second room's archiving is still off.
Prints OK and exits 0, or prints what went wrong and exits 1. Every wait is bounded.
"""
import asyncio
import logging
import ssl
import sys
import traceback

from slixmpp import ClientXMPP
from slixmpp.exceptions import PresenceError, IqError

PHASE, HOST, PORT, DOMAIN, PW = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
A, B, C = sys.argv[6:9]
SERVICE = 'conference.' + DOMAIN
ROOM = 'lobby@' + SERVICE
QUIET = 'quiet@' + SERVICE
MAM = 'urn:xmpp:mam:2'
T = 8


class Client(ClientXMPP):
    def __init__(self, user):
        super().__init__(f'{user}@{DOMAIN}/muc', PW)
        for p in ('xep_0030', 'xep_0045', 'xep_0199', 'xep_0004'):
            self.register_plugin(p)
        self.msgs = asyncio.Queue()
        self.pres = asyncio.Queue()
        self.errors = asyncio.Queue()
        self.chats = asyncio.Queue()
        self.add_event_handler('message', lambda m: m['type'] == 'chat' and self.chats.put_nowait(m))
        self.add_event_handler('groupchat_message_error', lambda m: self.errors.put_nowait(m))
        self.started = asyncio.get_event_loop().create_future()
        self.add_event_handler('session_start', self._start)
        self.add_event_handler('failed_auth', lambda _: self.started.done() or self.started.set_exception(AssertionError('auth failed')))
        self.add_event_handler('groupchat_message', lambda m: self.msgs.put_nowait(m))
        self.add_event_handler(f'muc::{ROOM}::presence', lambda p: self.pres.put_nowait(p))
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE

    def _start(self, _):
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)

    async def body(self, want):
        while True:
            m = await asyncio.wait_for(self.msgs.get(), T)
            if m['body'] == want and not m.get_plugin('delay', check=True):
                return m

    async def presence_of(self, nick, typ):
        while True:
            p = await asyncio.wait_for(self.pres.get(), T)
            if p['from'].resource == nick and p['type'] == typ:
                return p


async def login(user):
    c = Client(user)
    c.connect((HOST, PORT))
    await asyncio.wait_for(c.started, 15)
    return c


def codes(p):
    return {int(x) for x in p['muc']['status_codes']}


def check(cond, what):
    if not cond:
        raise AssertionError(what)


async def items(c, to):
    r = await c['xep_0030'].get_items(jid=to, timeout=T)
    return {i[0] for i in r['disco_items']['items']}


async def ping(c, to):
    try:
        await c['xep_0199'].send_ping(to, timeout=T)
        return 'result'
    except IqError as e:
        return e.iq['error']['condition']


async def create():
    a, b, c = await login(A), await login(B), await login(C)
    muc_a, muc_b, muc_c = a['xep_0045'], b['xep_0045'], c['xep_0045']
    # Creation: the room is locked until configured (status 201).
    pres, _, _, _ = await muc_a.join_muc_wait(ROOM, 'alice', maxstanzas=0, timeout=T)
    check({110, 201} <= codes(pres), f'creation codes {codes(pres)}')
    form = await muc_a.get_room_config(ROOM, timeout=T)
    form['type'] = 'submit'
    form.set_values({'muc#roomconfig_persistentroom': True, 'muc#roomconfig_roomname': 'Persisted Lobby'})
    await muc_a.set_room_config(ROOM, form, timeout=T)
    pres, _, occ, _ = await muc_b.join_muc_wait(ROOM, 'bob', maxstanzas=10, timeout=T)
    check(110 in codes(pres), 'bob: no 110')
    check('alice' in [o['from'].resource for o in occ], f'bob saw occupants {[str(o["from"]) for o in occ]}')
    try:
        await muc_c.join_muc_wait(ROOM, 'bob', timeout=T)
        raise AssertionError('carol joined with a taken nick')
    except PresenceError as e:
        check(e.presence['error']['condition'] == 'conflict', f'nick conflict: {e.presence}')
    # Groupchat reaches every occupant, the sender included.
    a.send_message(mto=ROOM, mbody='hello from alice', mtype='groupchat')
    for cl in (a, b):
        m = await cl.body('hello from alice')
        check(m['from'] == ROOM + '/alice', f'from {m["from"]}')
        check('urn:xmpp:sid:0' in str(m), f'no stanza-id from the archived room: {m}')
    # A later joiner gets it as history (with a delay from the room).
    _, _, _, hist = await muc_c.join_muc_wait(ROOM, 'carol', maxstanzas=5, timeout=T)
    check([h['body'] for h in hist] == ['hello from alice'], f'carol history {[h["body"] for h in hist]}')
    # Private message through the room.
    a.send_message(mto=ROOM + '/bob', mbody='just for bob', mtype='chat')
    pm = await asyncio.wait_for(b.chats.get(), T)
    check(pm['from'] == ROOM + '/alice' and pm['body'] == 'just for bob', f'private message {pm}')
    b.send_message(mto=ROOM, mbody='hi from bob', mtype='groupchat')
    for cl in (a, b, c):
        await cl.body('hi from bob')
    # Membership (persisted) and a kick.
    await muc_a.set_affiliation(ROOM, 'member', jid=b.boundjid.bare, timeout=T)
    await muc_a.set_role(ROOM, 'carol', 'none', reason='out', timeout=T)
    p = await c.presence_of('carol', 'unavailable')
    check({110, 307} <= codes(p), f'kicked carol codes {codes(p)}')
    for cl in (a, b):
        p = await cl.presence_of('carol', 'unavailable')
        check(307 in codes(p), f'others: kick codes {codes(p)}')
    # Carol is out: her groupchat bounces and nobody receives it.
    c.send_message(mto=ROOM, mbody='still here?', mtype='groupchat')
    e = await asyncio.wait_for(c.errors.get(), T)
    check(e['error']['condition'] == 'not-acceptable', f'kicked carol groupchat: {e}')
    b.send_message(mto=ROOM, mbody='after kick', mtype='groupchat')
    m = await asyncio.wait_for(a.msgs.get(), T)
    check(m['body'] == 'after kick', f'alice got {m["body"]!r} after the kick')
    # Disco: the server lists the service, the service lists the room.
    check(SERVICE in await items(a, DOMAIN), 'server disco#items lacks the MUC service')
    check(ROOM in await items(a, SERVICE), 'service disco#items lacks the room')
    info = await a['xep_0030'].get_info(jid=ROOM, timeout=T)
    check('muc_persistent' in info['disco_info']['features'], 'room not persistent in disco#info')
    # XEP-0410 self-ping.
    check(await ping(b, ROOM + '/bob') == 'result', 'bob self-ping')
    check(await ping(c, ROOM + '/carol') == 'not-acceptable', 'kicked carol self-ping')
    check(MAM in info['disco_info']['features'], 'the lobby lacks MAM in disco#info')
    # A room whose owner turns archiving off (ejabberd's room option mam).
    await muc_a.join_muc_wait(QUIET, 'alice', maxstanzas=0, timeout=T)
    form = await muc_a.get_room_config(QUIET, timeout=T)
    check('muc#roomconfig_enablearchiving' in form.get_fields(), f'no archiving field in the form: {list(form.get_fields())}')
    form['type'] = 'submit'
    form.set_values({'muc#roomconfig_persistentroom': True, 'muc#roomconfig_enablearchiving': False})
    await muc_a.set_room_config(QUIET, form, timeout=T)
    await muc_b.join_muc_wait(QUIET, 'bob', maxstanzas=0, timeout=T)
    a.send_message(mto=QUIET, mbody='not archived', mtype='groupchat')
    m = await b.body('not archived')
    check('urn:xmpp:sid:0' not in str(m), f'stanza-id with archiving off: {m}')
    info = await a['xep_0030'].get_info(jid=QUIET, timeout=T)
    check(MAM not in info['disco_info']['features'], 'MAM in disco#info with archiving off')
    for cl in (a, b, c):
        cl.disconnect()


async def after():
    a, b = await login(A), await login(B)
    info = await a['xep_0030'].get_info(jid=ROOM, timeout=T)
    names = [i[3] for i in info['disco_info']['identities']]
    check('Persisted Lobby' in names, f'room name after restart: {names}')
    members = await a['xep_0045'].get_affiliation_list(ROOM, 'member', timeout=T)
    check(b.boundjid.bare in [str(j) for j in members], f'members after restart: {members}')
    pres, _, _, _ = await a['xep_0045'].join_muc_wait(ROOM, 'alice', timeout=T)
    check(201 not in codes(pres), 'room created anew after restart')
    item = pres['muc']['affiliation']
    check(item == 'owner', f'alice affiliation after restart: {item}')
    pres, _, _, _ = await b['xep_0045'].join_muc_wait(ROOM, 'bob', timeout=T)
    check(pres['muc']['affiliation'] == 'member', f'bob affiliation {pres["muc"]["affiliation"]}')
    a.send_message(mto=ROOM, mbody='back again', mtype='groupchat')
    await b.body('back again')
    form = await a['xep_0045'].get_room_config(QUIET, timeout=T)
    v = form.get_fields()['muc#roomconfig_enablearchiving']['value']
    check(v in (False, '0', 'false'), f'archiving of the quiet room after restart: {v!r}')
    for cl in (a, b):
        cl.disconnect()


async def main():
    try:
        await asyncio.wait_for({'create': create, 'after': after}[PHASE](), 60)
    except Exception as e:
        traceback.print_exc()
        print(f'FAIL {PHASE}: {e!r}')
        sys.exit(1)
    print('OK')


if __name__ == '__main__':
    logging.basicConfig(level=logging.ERROR)
    asyncio.get_event_loop().run_until_complete(main())
