#!/usr/bin/python3
"""MAM scenario for xmppd, driven with slixmpp's xep_0313 and xep_0359 plugins.

usage: mam.py HOST PORT DOMAIN PASSWORD ALICE BOB CAROL

Alice sends 5 messages to Bob, Bob answers twice, Carol sends one. Bob's delivered
copies carry stanza-ids by Bob's bare JID; Bob pages through his archive with Alice
(max 3) and gets exactly those stanzas with the same ids, then the last page with
an empty <before/>. Prints OK and exits 0, or says what went wrong and exits 1.
Every wait is bounded.
"""
import asyncio
import ssl
import sys
import time

from slixmpp import ClientXMPP, JID

HOST, PORT, DOMAIN, PW = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
A, B, CU = sys.argv[5:8]


class Client(ClientXMPP):
    def __init__(self, user):
        super().__init__(f'{user}@{DOMAIN}/r', PW)
        for p in ('xep_0313', 'xep_0359', 'xep_0059'):
            self.register_plugin(p)
        self.msgs = []
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.started = asyncio.get_event_loop().create_future()
        self.add_event_handler('session_start', self._start)
        self.add_event_handler('message', lambda m: m['body'] and not m['mam_result']['id'] and self.msgs.append(m))

    def _start(self, _):
        self.send_presence()
        self.started.done() or self.started.set_result(True)

    async def until(self, n, what):
        end = time.monotonic() + 8
        while len(self.msgs) < n:
            if time.monotonic() > end:
                raise AssertionError(f'{self.boundjid}: timed out waiting for {what}: have {len(self.msgs)}')
            await asyncio.sleep(0.02)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


async def main():
    cs = [Client(u) for u in (A, B, CU)]
    for c in cs:
        c.connect((HOST, PORT))
    await asyncio.wait_for(asyncio.gather(*(c.started for c in cs)), 15)
    a, b, c = cs
    aj, bj = JID(f'{A}@{DOMAIN}'), JID(f'{B}@{DOMAIN}')
    for i in range(5):
        a.send_message(mto=bj, mbody=f'a{i}', mtype='chat')
    await b.until(5, "alice's messages")
    for i in range(2):
        b.send_message(mto=aj, mbody=f'b{i}', mtype='chat')
    await a.until(2, "bob's messages")
    c.send_message(mto=bj, mbody='c0', mtype='chat')
    await b.until(6, "carol's message")
    sid = {}
    for m in b.msgs:
        check(m['stanza_id']['by'] == str(bj) and m['stanza_id']['id'], f'no stanza-id by bob: {m}')
        sid[m['body']] = m['stanza_id']['id']

    # Forward pages of 3 with Alice: a0-a2, a3 a4 b0, b1.
    want = ['a0', 'a1', 'a2', 'a3', 'a4', 'b0', 'b1']
    got, after, pages = [], None, 0
    while True:
        rsm = {'max': 3}
        if after:
            rsm['after'] = after
        r = await b['xep_0313'].retrieve(jid=bj, with_jid=aj, rsm=rsm, timeout=10)
        pages += 1
        res = r['mam']['results']
        fin = r['mam_fin']
        check(fin['rsm']['count'] == '7', f"count {fin['rsm']['count']}")
        for m in res:
            fwd = m['mam_result']['forwarded']
            body = fwd['stanza']['body']
            got.append(body)
            if body in sid:
                check(m['mam_result']['id'] == sid[body], f'{body}: result id {m["mam_result"]["id"]} != delivered stanza-id {sid[body]}')
            check(fwd['delay']['stamp'] is not None, 'no delay')
        if r.xml.find('{urn:xmpp:mam:2}fin').get('complete') == 'true' or pages > 5:
            break
        after = fin['rsm']['last']
    check(got == want, f'pages gave {got}')
    check(pages == 3, f'{pages} pages')

    # The last page (empty <before/>) of the whole archive: b1 c0.
    iq = b.make_iq_set(ito=None)
    iq.append(__import__('xml.etree.ElementTree', fromlist=['x']).fromstring(
        "<query xmlns='urn:xmpp:mam:2' queryid='last'><set xmlns='http://jabber.org/protocol/rsm'><max>2</max><before/></set></query>"))
    seen = []
    def grab(st):
        r = st.xml.find('{urn:xmpp:mam:2}result')
        if r is not None and r.get('queryid') == 'last':
            seen.append(r.find('.//{jabber:client}body').text)
        return st
    b.add_filter('in', grab)
    r = await iq.send(timeout=10)
    fin = r.xml.find('{urn:xmpp:mam:2}fin')
    check(fin is not None and fin.get('complete') != 'true', 'fin of last page')
    end = time.monotonic() + 3
    while len(seen) < 2 and time.monotonic() < end:
        await asyncio.sleep(0.02)
    check(seen == ['b1', 'c0'], f'last page {seen}')
    # Alice's archive has her sent copies too.
    r = await a['xep_0313'].retrieve(with_jid=bj, rsm={'max': 10}, timeout=10)
    bodies = [m['mam_result']['forwarded']['stanza']['body'] for m in r['mam']['results']]
    check(bodies == want, f"alice's archive {bodies}")
    for x in cs:
        x.disconnect()
    print('OK')


try:
    asyncio.get_event_loop().run_until_complete(asyncio.wait_for(main(), 18))
except Exception as e:  # noqa: BLE001
    print('FAIL', repr(e))
    sys.exit(1)
