#!/usr/bin/python3
"""Logins through xmppd's authentication backends, with slixmpp.

usage: login.py STEP [+ STEP ...], each STEP one of
       pair USER1 PASS1 USER2 PASS2 MECHANISM
         both log in (with MECHANISM), USER1 sends USER2 a message, USER2 gets it
       fail USER PASS CONDITION
         the login fails with the SASL failure CONDITION
Prints PASS and exits 0, or says what went wrong and exits 1.
"""
import asyncio
import sys

import xmpptest as x


async def pair(u1, p1, u2, p2, mech):
    a = x.client(x.jid(u1, 'r'), p1)
    b = x.client(x.jid(u2, 'r'), p2)
    await x.start(a)
    await x.start(b)
    for c in (a, b):
        if x.mechanism(c) != mech:
            raise AssertionError('%s logged in with %s, want %s' % (c.boundjid, x.mechanism(c), mech))
    got = x.event(b, 'message', lambda m: m['body'] == 'hello through ' + mech)
    a.send_message(mto=x.jid(u2), mbody='hello through ' + mech, mtype='chat')
    await asyncio.wait_for(got, 10)
    await x.stop(a)
    await x.stop(b)


async def fail(u, p, cond):
    c = x.client(x.jid(u, 'r'), p)
    failed = x.event(c, 'failed_auth')
    try:
        await x.start(c)
    except RuntimeError:
        pass
    stanza = await asyncio.wait_for(failed, 10)
    if stanza['condition'] != cond:
        raise AssertionError('SASL failure %r, want %r' % (stanza['condition'], cond))
    await x.stop(c)


async def main():
    steps, step = [], []
    for a in sys.argv[1:] + ['+']:
        if a == '+':
            steps.append(step)
            step = []
        else:
            step.append(a)
    for st in steps:
        if st[0] == 'pair':
            await pair(*st[1:6])
        else:
            await fail(*st[1:4])
        print('step ok:', ' '.join(st))


x.run(main, 50)
