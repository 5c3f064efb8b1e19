#!/usr/bin/python3
"""Avatar conversion (XEP-0398) and presence hashes (XEP-0153) with slixmpp.

usage: avatar.py PASSWORD

alice publishes a PEP avatar with slixmpp's XEP-0084 plugin; bob reads her vCard
(XEP-0054 plugin) and finds the image as PHOTO; alice's next presence reaches her
second resource with vcard-temp:x:update carrying the image's SHA-1. carol sets a
vCard with a PHOTO; her PEP avatar metadata and data nodes then hold it.
Prints PASS and exits 0, or says what went wrong and exits 1. Every wait is bounded.
"""
import asyncio
import base64
import hashlib
import sys

import xmpptest as X

PW = sys.argv[1]
IMG = b'\x89PNG\r\n\x1a\n' + bytes(range(256)) * 4
HASH = hashlib.sha1(IMG).hexdigest()
UPD = '{vcard-temp:x:update}'


def user(name, res, plugins=()):
    c = X.client(X.jid(name, res), PW, plugins=['xep_0030', 'xep_0060', 'xep_0163'] + list(plugins))
    c.pres = asyncio.Queue()
    c.add_event_handler('presence_available', lambda p: c.pres.put_nowait(p))
    return c


async def hashed_presence(c, sender, timeout=10):
    """The next available presence from sender whose x:update names HASH."""
    end = asyncio.get_event_loop().time() + timeout
    while True:
        p = await asyncio.wait_for(c.pres.get(), max(0.01, end - asyncio.get_event_loop().time()))
        if str(p['from']) != sender:
            continue
        x = p.xml.find(UPD + 'x')
        if x is not None and x.findtext(UPD + 'photo') == HASH:
            return p


async def main():
    a1 = await X.start(user('alice', 'one', ['xep_0084']))
    a2 = await X.start(user('alice', 'two'))
    await a1['xep_0084'].publish_avatar(IMG, timeout=10)
    await a1['xep_0084'].publish_avatar_metadata({'id': HASH, 'type': 'image/png', 'bytes': len(IMG)}, timeout=10)
    print('avatar published', HASH)

    bob = await X.start(user('bob', 'pc', ['xep_0054']))
    iq = await bob['xep_0054'].get_vcard(X.jid('alice'), local=False, timeout=10)
    photo = iq['vcard_temp']['PHOTO']
    assert photo['TYPE'] == 'image/png', iq
    assert photo['BINVAL'] == IMG, 'vCard photo is not the PEP avatar: %r' % iq
    print('pep-to-vcard ok')

    a1.send_presence()
    await hashed_presence(a2, X.jid('alice', 'one'))
    print('presence-hash ok')

    carol = await X.start(user('carol', 'c', ['xep_0054']))
    vc = carol['xep_0054'].make_vcard()
    vc['FN'] = 'Carol'
    vc['PHOTO']['TYPE'] = 'image/png'
    vc['PHOTO']['BINVAL'] = IMG
    await carol['xep_0054'].publish_vcard(vc, timeout=10)
    meta = await carol['xep_0060'].get_items(X.jid('carol'), 'urn:xmpp:avatar:metadata', timeout=10)
    items = list(meta['pubsub']['items'])
    assert len(items) == 1 and items[0]['id'] == HASH, meta
    info = items[0].xml.find('{urn:xmpp:avatar:metadata}metadata/{urn:xmpp:avatar:metadata}info')
    assert info is not None and info.get('id') == HASH and info.get('bytes') == str(len(IMG)), meta
    data = await carol['xep_0060'].get_items(X.jid('carol'), 'urn:xmpp:avatar:data', item_ids=[HASH], timeout=10)
    d = list(data['pubsub']['items'])[0].xml.findtext('{urn:xmpp:avatar:data}data')
    assert base64.b64decode(d) == IMG, data
    print('vcard-to-pep ok')
    for c in (a1, a2, bob, carol):
        await X.stop(c)


X.run(main, timeout=50)
