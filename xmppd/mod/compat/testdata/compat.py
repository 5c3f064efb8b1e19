#!/usr/bin/python3
"""The compatibility scenarios: the same slixmpp clients against any server.

usage: compat.py HOST PORT DOMAIN PASSWORD ALICE BOB CAROL

Runs each scenario (PEP publish and notify, MAM, MUC, Bookmarks 2, HTTP upload)
and prints one JSON object: per scenario either what the clients observed,
normalized so that servers behaving alike give equal values (bodies, flags,
counts, error conditions; never ids or timestamps), or {"error": "..."} when the
scenario could not run (the feature is missing or broken). Every wait is
bounded. Exits 0 unless the clients could not log in.
"""
import asyncio
import copy
import json
import ssl
import sys
import time
import traceback
import urllib.request
import xml.etree.ElementTree as ET

from slixmpp import ClientXMPP

HOST, PORT, DOMAIN, PW, A, B, CU = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
C = '{jabber:client}'
PS = 'http://jabber.org/protocol/pubsub'
EV = '{http://jabber.org/protocol/pubsub#event}'
MAM = 'urn:xmpp:mam:2'
RSM = 'http://jabber.org/protocol/rsm'
FWD = '{urn:xmpp:forward:0}'
SID = '{urn:xmpp:sid:0}'
MUC = 'http://jabber.org/protocol/muc'
BM = 'urn:xmpp:bookmarks:1'
UP = 'urn:xmpp:http:upload:0'
NODE = 'urn:example:compat:0'
ROOM = f'compat@conference.{DOMAIN}'
STANZAS = '{urn:ietf:params:xml:ns:xmpp-stanzas}'


def bare(u):
    return f'{u}@{DOMAIN}'


def s(e):
    return ET.tostring(e, encoding='unicode')


def form(fields, ftype='submit'):
    out = f"<x xmlns='jabber:x:data' type='{ftype}'>"
    for k, v in fields:
        out += f"<field var='{k}'><value>{v}</value></field>"
    return out + '</x>'


class Failed(Exception):
    pass


class Client(ClientXMPP):
    def __init__(self, user, res):
        super().__init__(f'{user}@{DOMAIN}/{res}', PW)
        self.auto_authorize = None
        self.auto_subscribe = False
        for p in ('xep_0030', 'xep_0060', 'xep_0115', 'xep_0163'):
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
            await asyncio.sleep(0.02)
        pres = [e for e in self.got if e.tag == C + 'presence' or 'roster' in s(e)]
        raise Failed(f'{self.boundjid}: timed out waiting for {what}; presences and roster pushes received: ' + ' | '.join(s(e)[:200] for e in pres[-6:]))

    def take(self, pred):
        out = [e for e in self.got if pred(e)]
        self.got = [e for e in self.got if not pred(e)]
        return out

    async def iq(self, inner, typ='get', to=None, ok=True):
        self.seq += 1
        i = f'c{self.seq}'
        t = f" to='{to}'" if to else ''
        self.send_raw(f"<iq type='{typ}' id='{i}'{t}>{inner}</iq>")
        r = await self.wait(lambda e: e.tag == C + 'iq' and e.get('id') == i and e.get('type') in ('result', 'error'), f'reply to {inner[:60]}')
        if ok and r.get('type') != 'result':
            raise Failed(f'{inner[:80]}: {s(r)[:400]}')
        return r


def condition(r):
    e = r.find(C + 'error')
    if e is None:
        return None
    for c in e:
        if c.tag.startswith(STANZAS) and c.tag != STANZAS + 'text':
            return c.tag[len(STANZAS):]
    return None


async def login(user, res):
    c = Client(user, res)
    c.connect((HOST, PORT))
    await asyncio.wait_for(c.started, 15)
    c.send_raw('<presence/>')
    return c


def is_pres(frm, typ):
    return lambda e: e.tag == C + 'presence' and e.get('from', '').split('/')[0] == frm and e.get('type') == typ


def chat_from(frm, body=None):
    return lambda e: e.tag == C + 'message' and e.get('from', '').split('/')[0] == frm and e.findtext(C + 'body') is not None and (body is None or e.findtext(C + 'body') == body)


async def pep(a, b):
    """a and b become mutual contacts; b advertises +notify for NODE; a publishes
    an item; b is notified and reads the node back; a retracts it."""
    b['xep_0163'].add_interest(NODE)
    await b['xep_0115'].update_caps(broadcast=False)
    b.send_presence()
    a.send_raw(f"<presence to='{bare(B)}' type='subscribe'/>")
    await b.wait(is_pres(bare(A), 'subscribe'), 'subscribe')
    b.send_raw(f"<presence to='{bare(A)}' type='subscribed'/>")
    b.send_raw(f"<presence to='{bare(A)}' type='subscribe'/>")
    await a.wait(is_pres(bare(B), 'subscribe'), 'subscribe back')
    a.send_raw(f"<presence to='{bare(B)}' type='subscribed'/>")
    # Once subscribed both ways each sees the other available (RFC 6121 §3.1.5;
    # Prosody delivers no 'subscribed' stanza to b here, the presence it does).
    await b.wait(lambda e: e.tag == C + 'presence' and e.get('from', '').startswith(bare(A) + '/') and e.get('type') is None, 'a available')
    # b's caps with +notify reach a's server with b's presence to a.
    b.send_presence()
    await a.wait(lambda e: e.tag == C + 'presence' and e.get('from', '').startswith(bare(B) + '/') and e.get('type') is None, 'b available')
    await asyncio.sleep(0.3)  # the server resolves b's caps by disco#info (not ours to order)
    r = await a.iq(f"<pubsub xmlns='{PS}'><publish node='{NODE}'><item id='i1'><entry xmlns='{NODE}'>hello</entry></item></publish></pubsub>", 'set')
    pub = r.find(f'{{{PS}}}pubsub/{{{PS}}}publish')
    ev = await b.wait(lambda e: e.tag == C + 'message' and e.find(f'{EV}event/{EV}items') is not None and e.find(f'{EV}event/{EV}items').get('node') == NODE, 'notification')
    it = ev.find(f'{EV}event/{EV}items/{EV}item')
    got = await b.iq(f"<pubsub xmlns='{PS}'><items node='{NODE}'/></pubsub>", to=bare(A))
    ids = [i.get('id') for i in got.findall(f'{{{PS}}}pubsub/{{{PS}}}items/{{{PS}}}item')]
    await a.iq(f"<pubsub xmlns='{PS}'><retract node='{NODE}' notify='true'><item id='i1'/></retract></pubsub>", 'set')
    after = await b.iq(f"<pubsub xmlns='{PS}'><items node='{NODE}'/></pubsub>", to=bare(A))
    try:
        rev = await b.wait(lambda e: e.tag == C + 'message' and e.find(f'{EV}event/{EV}items/{EV}retract') is not None, 'retraction', 2)
        retracted = rev.find(f'{EV}event/{EV}items/{EV}retract').get('id')
    except Failed:
        retracted = None
    return {
        'publish_result_item': pub is not None and pub.find(f'{{{PS}}}item') is not None and pub.find(f'{{{PS}}}item').get('id') == 'i1',
        'notified_from': ev.get('from'),
        'notified_item': it.get('id'),
        'notified_payload': it.findtext(f'{{{NODE}}}entry'),
        'items': ids,
        'retract_notified': retracted,
        'items_after_retract': [i.get('id') for i in after.findall(f'{{{PS}}}pubsub/{{{PS}}}items/{{{PS}}}item')],
    }


async def mam_query(c, qid, fields=(), rsm=''):
    x = form([('FORM_TYPE', MAM)] + list(fields)) if fields else ''
    r = await c.iq(f"<query xmlns='{MAM}' queryid='{qid}'>{x}<set xmlns='{RSM}'>{rsm}</set></query>", 'set')
    res = c.take(lambda e: e.tag == C + 'message' and e.find(f'{{{MAM}}}result') is not None and e.find(f'{{{MAM}}}result').get('queryid') == qid)
    bodies = []
    ids = []
    for m in res:
        rr = m.find(f'{{{MAM}}}result')
        ids.append(rr.get('id'))
        bodies.append(rr.findtext(f'{FWD}forwarded/{C}message/{C}body'))
    fin = r.find(f'{{{MAM}}}fin')
    # <first index=.../> is optional (XEP-0059) and neither ejabberd nor Prosody
    # sends it in MAM: not observed.
    return {'bodies': bodies, 'complete': fin is not None and fin.get('complete') in ('true', '1'),
            'count': fin.findtext(f'{{{RSM}}}set/{{{RSM}}}count') if fin is not None else None}, ids


async def mam(a, b, c):
    """a sends 3 messages to b and 2 to c; b's copies carry a stanza-id by b that
    b's archive returns; a queries its archive: all, with=b, forward pages of 2,
    the last page, an unknown id."""
    sids = []
    for i in range(3):
        a.send_raw(f"<message type='chat' to='{bare(B)}' id='mb{i}'><body>to-b-{i}</body></message>")
        m = await b.wait(chat_from(bare(A), f'to-b-{i}'), f'message {i}')
        sid = m.find(SID + 'stanza-id')
        sids.append(sid.get('id') if sid is not None and sid.get('by') == bare(B) else None)
    for i in range(2):
        a.send_raw(f"<message type='chat' to='{bare(CU)}'><body>to-c-{i}</body></message>")
        await c.wait(chat_from(bare(A), f'to-c-{i}'), f'message to c {i}')
    out = {'stanza_id_by_recipient': all(sids)}
    out['all'], _ = await mam_query(a, 'q1', rsm='<max>10</max>')
    out['with_b'], _ = await mam_query(a, 'q2', [('with', bare(B))])
    p1, ids = await mam_query(a, 'q3', rsm='<max>2</max>')
    out['page1'] = p1
    out['page2'], _ = await mam_query(a, 'q4', rsm=f'<max>2</max><after>{ids[-1]}</after>') if ids else ({}, [])
    out['last_page'], _ = await mam_query(a, 'q5', rsm='<max>2</max><before/>')
    bq, bids = await mam_query(b, 'q6')
    out['recipient_archive'] = bq['bodies']
    out['recipient_ids_are_stanza_ids'] = bids == sids
    r = await a.iq(f"<query xmlns='{MAM}' queryid='q7'><set xmlns='{RSM}'><after>no-such-id</after></set></query>", 'set', ok=False)
    out['unknown_after'] = condition(r) if r.get('type') == 'error' else 'result'
    return out


def muc_pres(room_nick):
    return lambda e: e.tag == C + 'presence' and e.get('from') == room_nick


def codes(e):
    return sorted(st.get('code') for st in e.iter(f'{{{MUC}#user}}status'))


async def muc(a, b, c):
    """a creates a room (locked, status 201) and accepts the default
    configuration; b joins; a sets the subject and says hello; c joins later and
    gets the history and the subject; b leaves."""
    a.send_raw(f"<presence to='{ROOM}/al'><x xmlns='{MUC}'/></presence>")
    p = await a.wait(muc_pres(f'{ROOM}/al'), 'own presence')
    out = {'create_codes': codes(p), 'create_affiliation': p.find(f'{{{MUC}#user}}x/{{{MUC}#user}}item').get('affiliation')}
    if '201' in out['create_codes']:
        await a.iq(f"<query xmlns='{MUC}#owner'>{form([], 'submit')}</query>", 'set', to=ROOM)
    b.send_raw(f"<presence to='{ROOM}/bo'><x xmlns='{MUC}'/></presence>")
    bp = await b.wait(muc_pres(f'{ROOM}/bo'), 'b own presence')
    out['join_codes'] = codes(bp)
    await b.wait(muc_pres(f'{ROOM}/al'), "a's presence to b")
    ap = await a.wait(muc_pres(f'{ROOM}/bo'), "b's presence to a")
    out['join_seen_role'] = ap.find(f'{{{MUC}#user}}x/{{{MUC}#user}}item').get('role')
    a.send_raw(f"<message type='groupchat' to='{ROOM}'><subject>Topic</subject></message>")
    sb = await b.wait(lambda e: e.tag == C + 'message' and e.findtext(C + 'subject') == 'Topic', 'subject')
    out['subject_from'] = sb.get('from')
    a.send_raw(f"<message type='groupchat' to='{ROOM}' id='g1'><body>hello room</body></message>")
    gm = await b.wait(lambda e: e.tag == C + 'message' and e.get('type') == 'groupchat' and e.findtext(C + 'body') == 'hello room', 'groupchat')
    refl = await a.wait(lambda e: e.tag == C + 'message' and e.get('type') == 'groupchat' and e.findtext(C + 'body') == 'hello room', 'reflection')
    out['groupchat_from'] = gm.get('from')
    out['reflection_keeps_id'] = refl.get('id') == 'g1'
    c.send_raw(f"<presence to='{ROOM}/ca'><x xmlns='{MUC}'><history maxstanzas='5'/></x></presence>")
    await c.wait(muc_pres(f'{ROOM}/ca'), 'c own presence')
    h = await c.wait(lambda e: e.tag == C + 'message' and e.findtext(C + 'body') == 'hello room', 'history')
    out['history_from'] = h.get('from')
    out['history_delayed'] = h.find('{urn:xmpp:delay}delay') is not None
    cs = await c.wait(lambda e: e.tag == C + 'message' and e.findtext(C + 'subject') is not None, 'subject on join')
    out['subject_on_join'] = cs.findtext(C + 'subject')
    b.send_raw(f"<presence to='{ROOM}/bo' type='unavailable'/>")
    gone = await a.wait(lambda e: e.tag == C + 'presence' and e.get('from') == f'{ROOM}/bo' and e.get('type') == 'unavailable', 'leave')
    out['leave_role'] = gone.find(f'{{{MUC}#user}}x/{{{MUC}#user}}item').get('role')
    # a nick already taken
    b.send_raw(f"<presence to='{ROOM}/al'><x xmlns='{MUC}'/></presence>")
    e = await b.wait(lambda e: e.tag == C + 'presence' and e.get('from') == f'{ROOM}/al' and e.get('type') == 'error', 'nick conflict')
    out['nick_conflict'] = condition(e)
    return out


async def bookmarks(a):
    """a stores a Bookmarks 2 item (XEP-0402 publish-options) and reads it back."""
    po = form([('FORM_TYPE', PS + '#publish-options'), ('pubsub#persist_items', 'true'), ('pubsub#max_items', 'max'),
               ('pubsub#send_last_published_item', 'never'), ('pubsub#access_model', 'whitelist')])
    r = await a.iq(f"<pubsub xmlns='{PS}'><publish node='{BM}'><item id='{ROOM}'><conference xmlns='{BM}' name='Compat' autojoin='true'>"
                   f"<nick>al</nick></conference></item></publish><publish-options>{po}</publish-options></pubsub>", 'set', ok=False)
    if r.get('type') != 'result':
        raise Failed(f'publish with the XEP-0402 publish-options refused: {condition(r)}')
    r = await a.iq(f"<pubsub xmlns='{PS}'><items node='{BM}'/></pubsub>")
    out = []
    for it in r.findall(f'{{{PS}}}pubsub/{{{PS}}}items/{{{PS}}}item'):
        cf = it.find(f'{{{BM}}}conference')
        out.append({'id': it.get('id'), 'name': cf.get('name'), 'autojoin': cf.get('autojoin') in ('true', '1'), 'nick': cf.findtext(f'{{{BM}}}nick')})
    return {'items': out}


async def upload(a):
    """a asks upload.DOMAIN for a slot, PUTs the file and GETs it back; a slot
    for a file over the limit is refused."""
    svc = f'upload.{DOMAIN}'
    data = b'compat-file'
    r = await a.iq(f"<request xmlns='{UP}' filename='c.txt' size='{len(data)}' content-type='text/plain'/>", to=svc)
    slot = r.find(f'{{{UP}}}slot')
    put = slot.find(f'{{{UP}}}put')
    get = slot.find(f'{{{UP}}}get').get('url')
    headers = {h.get('name'): h.text for h in put.findall(f'{{{UP}}}header')}
    headers['Content-Type'] = 'text/plain'
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    loop = asyncio.get_event_loop()

    def put_get():
        req = urllib.request.Request(put.get('url'), data=data, method='PUT', headers=headers)
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
            st = resp.status
        with urllib.request.urlopen(get, timeout=10, context=ctx) as resp:
            return st, resp.read()
    st, back = await loop.run_in_executor(None, put_get)
    big = await a.iq(f"<request xmlns='{UP}' filename='big.bin' size='{10**9}'/>", to=svc, ok=False)
    return {'put_ok': st in (200, 201), 'get_equal': back == data, 'too_large': condition(big),
            'file_too_large_element': big.find(f'{C}error/{{{UP}}}file-too-large') is not None}


async def main():
    a, b, c = await login(A, 'a'), await login(B, 'b'), await login(CU, 'c')
    results = {}
    for name, fn in (('pep', lambda: pep(a, b)), ('mam', lambda: mam(a, b, c)), ('muc', lambda: muc(a, b, c)),
                     ('bookmarks', lambda: bookmarks(a)), ('upload', lambda: upload(a))):
        t0 = time.monotonic()
        try:
            results[name] = await asyncio.wait_for(fn(), 30)
        except Exception as e:  # recorded: the Go side decides what a failure means
            results[name] = {'error': f'{type(e).__name__}: {e}'[:600], 'trace': traceback.format_exc()[-600:]}
        results[name]['_seconds'] = round(time.monotonic() - t0, 2)
    for x in (a, b, c):
        x.disconnect()
    print('RESULT ' + json.dumps(results, sort_keys=True))


asyncio.get_event_loop().run_until_complete(main())
