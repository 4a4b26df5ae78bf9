"""The web console (``/console/``) on a real gateway running the default conf: login and
scopes, CSRF, bad input as 400 pages, the overview against Redis, an event's timeline
with its rendered messages (masked for a read token), actions through the admin API's
operations (audited), bulk replay, and the template preview against ``tocsin render``.

The browser test is in test_console_browser.py; both share one gateway per module.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote

import aiohttp
import pytest
import pytest_asyncio

from gateway.keys import Keys
from gateway.render import render_template

from .conftest import load_plan
from .console_stack import OPERATE, READ, Stack, csrf_of, login, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path_factory.mktemp("console")) as running:
        yield running


def session() -> aiohttp.ClientSession:
    # The gateway is at an IP address: aiohttp's default jar keeps no cookie for one.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def reason(text: str) -> str:
    found = re.search(r'id="reason">(.*?)</p>', text, re.S)
    assert found is not None, text
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1)))


async def test_login_cookie_csrf_and_scopes(stack: Stack):
    async with session() as s:
        async with s.get(stack.console + "/", allow_redirects=False) as resp:
            assert resp.status == 303
            assert unquote(resp.headers["Location"]) == "/console/login?next=/console/"
        async with s.get(stack.console + "/login") as resp:
            page = await resp.text()
            assert "Content-Security-Policy" in resp.headers
        # The login form's own CSRF token (double-submit cookie) is checked...
        form = {"csrf": "forged", "token": OPERATE}
        async with s.post(stack.console + "/login", data=form) as resp:
            assert resp.status == 403 and "stale" in reason(await resp.text())
        # ...and a wrong token is refused without a session.
        form = {"csrf": csrf_of(page), "token": "x" * 40}
        async with s.post(stack.console + "/login", data=form) as resp:
            assert resp.status == 401 and "not one of the conf's" in await resp.text()
        form["token"] = READ
        async with s.post(stack.console + "/login", data=form, allow_redirects=False) as resp:
            assert resp.status == 303
            cookie = resp.headers.getall("Set-Cookie")
        [session_cookie] = [c for c in cookie if c.startswith("tocsin_console=")]
        assert "HttpOnly" in session_cookie and "SameSite=Strict" in session_cookie
        # Redis holds a hash of the session id, never the id or the token.
        sid = session_cookie.split(";")[0].split("=", 1)[1]
        stored = [k async for k in stack.redis.scan_iter(match="tocsin:console:session:*")]
        assert stored and all(sid.encode() not in k for k in stored)
        for key in stored:
            assert READ.encode() not in await stack.redis.get(key)

        async with s.get(stack.console + "/") as resp:
            assert resp.status == 200
            page = await resp.text()
        assert "viewer" in page and "Retry now" not in page
        # A read token is refused every action, at the confirmation and at the POST.
        async with s.get(stack.console + "/confirm/disable?target=merchant_webhook") as resp:
            assert resp.status == 403 and "may only read" in reason(await resp.text())
        form = {"csrf": csrf_of(page), "target": "merchant_webhook"}
        async with s.post(stack.console + "/do/disable", data=form) as resp:
            assert resp.status == 403
        assert not await stack.redis.hexists(Keys().endpoint("merchant_webhook"), "disabled_at")
        # A POST without the session's CSRF token does nothing, even logged in.
        async with s.post(stack.console + "/logout", data={"csrf": "nope"}) as resp:
            assert resp.status == 403 and "CSRF" in reason(await resp.text())
        async with s.post(stack.console + "/logout", data={"csrf": csrf_of(page)}) as resp:
            assert resp.status == 200 and "Log in" in await resp.text()
        assert not [k async for k in stack.redis.scan_iter(match="tocsin:console:session:*")]
        s.cookie_jar.update_cookies({"tocsin_console": sid})  # the old cookie replayed
        async with s.get(stack.console + "/", allow_redirects=False) as resp:
            assert resp.status == 303


async def test_bad_input_is_a_400_page(stack: Stack):
    async with session() as s:
        await login(s, stack, READ)
        cases = {
            "/?x=1": ("x", "unknown parameter"),
            "/search?by=customer&q=cus_42&cursor=%%%": ("cursor", "malformed"),
            "/search?by=customer&q=cus_42&cursor=WzEsMl0": ("cursor", "not a cursor of this"),
            "/search?by=phone&q=1": ("by", "one of id, customer, invoice"),
            "/search?q=a&q=b": ("q", "given twice"),
            "/dead-letters?channel=nope": ("channel", "no channel 'nope'"),
            "/preview?template=../../etc": ("template", "no template"),
            "/preview?template=payment_receipt&sample=payment_succeeded.json&locale=de": (
                "locale",
                "has locales",
            ),
            "/audit?cursor=bad": ("cursor", "malformed"),
        }
        for path, (where, why) in cases.items():
            async with s.get(stack.console + path) as resp:
                text = await resp.text()
                assert resp.status == 400, (path, resp.status, text)
                shown = reason(text)
                assert shown.startswith(where + ":") and why in shown, (path, shown)
        async with s.get(stack.console + "/events/evt_nope") as resp:
            assert resp.status == 404 and "no event evt_nope" in reason(await resp.text())
        async with s.get(stack.console + "/no/such/page") as resp:
            assert resp.status == 404
        await login(s, stack, OPERATE)
        async with s.get(stack.console + "/confirm/explode?target=x") as resp:
            assert resp.status == 400 and "unknown action" in reason(await resp.text())
        async with s.get(stack.console + "/replay?status=dead&since=yesterday") as resp:
            assert resp.status == 400 and reason(await resp.text()).startswith("since:")
        async with s.get(stack.console + "/replay") as resp:
            assert resp.status == 400 and "at least one filter" in reason(await resp.text())


async def test_timeline_renders_and_masks(stack: Stack):
    event = await stack.post_event(customer={"id": "cus_mask", "phone": "+33687654321"})
    records = await stack.records_of(event["id"], merchant_webhook="delivered")
    customer = event["customer"]
    async with session() as s:
        await login(s, stack, READ)
        async with s.get(f"{stack.console}/events/{event['id']}") as resp:
            assert resp.status == 200
            page = html.unescape(await resp.text())
        # Every delivery of the fan-out index is on the page, with its status.
        for record in records:
            assert f'data-delivery="{record["id"]}"' in page
        # The large-payment JSON rendered from its template: what the merchant received.
        assert "large_payment" in page
        # A read token sees the customer's contact data masked, in the event and in
        # every rendered part.
        assert "contact data masked" in page
        for value in (customer["email"], customer["phone"], customer["name"]):
            assert value not in page, value
        assert "c***@atelier-dupont.fr" in page or "c***@" in page
        await login(s, stack, OPERATE)
        async with s.get(f"{stack.console}/events/{event['id']}") as resp:
            page = html.unescape(await resp.text())
        assert customer["email"] in page and "contact data masked" not in page
        # The search finds it by customer and by invoice ref; by id it opens the event.
        async with s.get(stack.console + "/search?by=customer&q=cus_mask") as resp:
            assert f"/console/events/{event['id']}" in await resp.text()
        async with s.get(stack.console + "/search?by=invoice&q=FA-2026-0042") as resp:
            assert f"/console/events/{event['id']}" in await resp.text()
        async with s.get(
            f"{stack.console}/search?by=id&q={event['id']}", allow_redirects=False
        ) as resp:
            assert resp.status == 303 and resp.headers["Location"].endswith(event["id"])


async def test_actions_are_confirmed_and_audited(stack: Stack):
    async with session() as s:
        await login(s, stack, OPERATE)
        # The confirmation page changes nothing.
        async with s.get(
            stack.console + "/confirm/disable?target=merchant_webhook&back=/console/endpoints"
        ) as resp:
            page = await resp.text()
            assert resp.status == 200 and "Hold channel merchant_webhook" in html.unescape(page)
        key = Keys().endpoint("merchant_webhook")
        assert not await stack.redis.hexists(key, "disabled_at")
        form = {
            "csrf": csrf_of(page),
            "target": "merchant_webhook",
            "reason": "maintenance",
            "back": "/console/endpoints",
        }
        async with s.post(stack.console + "/do/disable", data=form) as resp:
            assert resp.status == 200 and "done" in await resp.text()
        assert await stack.redis.hget(key, "disabled_reason") == b"disabled by oncall: maintenance"
        async with s.get(stack.console + "/") as resp:
            page = await resp.text()
        assert 'id="endpoints"' in page and "disabled by oncall: maintenance" in page
        form = {"csrf": form["csrf"], "target": "merchant_webhook"}
        async with s.post(stack.console + "/do/enable", data=form) as resp:
            assert resp.status == 200
        assert not await stack.redis.hexists(key, "disabled_at")
        # Refused by the operation (nothing waits): a 409 page with the reason, audited.
        async with s.post(stack.console + "/do/retry", data={**form, "target": "msg_nope"}) as resp:
            assert resp.status == 404 and "no delivery msg_nope" in reason(await resp.text())
        async with s.get(stack.console + "/audit?actor=oncall") as resp:
            page = html.unescape(await resp.text())
        for action in ("endpoint.disable", "endpoint.enable", "delivery.retry_now"):
            assert action in page
        entries = await stack.redis.xrange("tocsin:audit")
        mine = [(e[b"actor"], e[b"action"], e[b"outcome"]) for _, e in entries]
        assert (b"oncall", b"endpoint.disable", b"ok") in mine
        assert (b"oncall", b"delivery.retry_now", b"not_found") in mine


async def test_bulk_replay_counts_then_runs(stack: Stack):
    ids = [f"evt_bulk_{n}_{time.monotonic_ns()}" for n in range(3)]
    stack.merchant.rejecting.update(ids)
    for event_id in ids:
        await stack.post_event(customer={"id": "cus_bulk"}, id=event_id)
    for event_id in ids:
        await stack.records_of(event_id, merchant_webhook="dead")
    async with session() as s:
        await login(s, stack, OPERATE)
        # The count first (a dry run: nothing sent)...
        async with s.get(stack.console + "/replay?customer_id=cus_bulk&status=dead") as resp:
            page = await resp.text()
            assert resp.status == 200, page
        count = re.search(r'id="count"><strong>(\d+)</strong>', page)
        # merchant-sync and large-b2b-payment, for each event
        assert count is not None and int(count.group(1)) == 3 * 2
        assert await stack.redis.xlen(Keys().dead) >= 6
        stack.merchant.rejecting.difference_update(ids)
        # ...then the job, confirmed with that count, followed on its page.
        form = {
            "csrf": csrf_of(page),
            "customer_id": "cus_bulk",
            "status": "dead",
            "count": count.group(1),
        }
        async with s.post(stack.console + "/replay", data=form) as resp:
            assert resp.status == 200 and "/console/replays/job_" in str(resp.url)
            page = await resp.text()
        assert "confirmed count" in page
        job_url = str(resp.url).split("?")[0]
        for _ in range(200):
            async with s.get(job_url) as resp:
                page = await resp.text()
            if 'id="job-state">done<' in page:
                break
            await asyncio.sleep(0.05)
        assert 'id="job-state">done<' in page, page
        assert "6 of 6 handled: 6 queued, 0 skipped" in page
    for event_id in ids:
        records = await stack.records_of(event_id, merchant_webhook="delivered")
        assert all(
            r["status"] == "delivered" for r in records if r["channel"] == "merchant_webhook"
        )
    entries = await stack.redis.xrange("tocsin:audit")
    assert (b"oncall", b"replay.start") in [(e[b"actor"], e[b"action"]) for _, e in entries]


async def test_overview_matches_redis(stack: Stack):
    event = await stack.post_event()
    await stack.records_of(event["id"], merchant_webhook="delivered")
    async with session() as s:
        await login(s, stack, READ)
        async with s.get(stack.console + "/") as resp:
            page = await resp.text()
    keys = Keys()
    now_ms = int(time.time() * 1000)
    updated = await stack.redis.zcount(keys.history, now_ms - 3_600_000, now_ms)
    shown = int(re.search(r'id="deliveries-hour">(\d+)<', page).group(1))  # type: ignore[union-attr]
    assert 0 < shown <= updated  # read just before: nothing was settled since, or more
    assert '<svg class="chart"' in page and page.count("<polyline") == 3
    # Nothing is fetched from elsewhere: every script, style and link is the console's.
    assert not re.findall(r'(?:src|href)="(?:https?:)?//', page)
    assert re.findall(r'(?:src|href)="(/console/static/[^"]+)"', page)
    assert re.search(r'<tr data-channel="merchant_webhook">', page)
    assert "No watch breached." in page
    # Each process and the conf it runs (tocsin_conf_hash): here the one gateway.
    running = re.findall(r"<tr[^>]*><td>[^<]*</td><td>(\d+)</td><td><code>([0-9a-f]+)</code>", page)
    assert [pid for pid, _ in running] == [str(os.getpid())], running
    assert 'id="conf-mismatch"' not in page


async def test_template_preview_is_tocsin_render(stack: Stack):
    async with session() as s:
        await login(s, stack, READ)
        url = "/preview?template=payment_receipt&locale=en&sample=payment_succeeded.json"
        async with s.get(stack.console + url) as resp:
            assert resp.status == 200
            page = await resp.text()
    found = re.search(r'<pre id="render-text">(.*?)</pre>', page, re.S)
    assert found is not None
    plan = load_plan(stack.conf)
    expected = render_template(
        plan,
        "payment_receipt",
        Path(stack.conf.parent / "examples" / "payment_succeeded.json"),
        locale="en",
    )
    assert html.unescape(found.group(1)) == expected.text
    # The email's HTML in a sandboxed iframe (no scripts, no same-origin); the SMS's
    # encoding and segments.
    assert re.search(r'<iframe class="email" sandbox srcdoc="&lt;!DOCTYPE html', page)
    async with session() as s:
        await login(s, stack, READ)
        async with s.get(
            stack.console + "/preview?template=payment_failed&sample=payment_failed.json"
        ) as resp:
            page = await resp.text()
    assert re.search(r'class="sms-facts">SMS: (GSM-7|UCS-2)[^,]*, \d+ segment', page), page


async def test_cancel_a_scenario_from_its_event(stack: Stack):
    ref = f"pr_console_{time.monotonic_ns()}"
    event = await stack.post_event("payment_request_created.json", refs={"payment_request_id": ref})
    key = f"payment_request:{ref}"
    async with session() as s:
        await login(s, stack, OPERATE)
        # The scenario engine starts the instance after routing: wait for the page to say so.
        for _ in range(100):
            async with s.get(f"{stack.console}/events/{event['id']}") as resp:
                page = html.unescape(await resp.text())
            if "Cancel scenario" in page:
                break
            await asyncio.sleep(0.05)
        found = re.search(r'href="(/console/confirm/cancel-scenario\?[^"]+)"', page)
        assert found is not None, page
        assert "started by this event" in page and "<strong>active</strong>" in page
        async with s.get(stack.url + found.group(1)) as resp:
            page = await resp.text()
            assert resp.status == 200 and key in html.unescape(page)
        form = {
            "csrf": csrf_of(page),
            "target": key,
            "scenario": re.search(r'name="scenario" value="([^"]*)"', page).group(1),  # type: ignore[union-attr]
        }
        async with s.post(stack.console + "/do/cancel-scenario", data=form) as resp:
            result = html.unescape(await resp.text())
            assert resp.status == 200 and '"cancelled": [' in result
        async with s.get(f"{stack.console}/events/{event['id']}") as resp:
            page = html.unescape(await resp.text())
        # The one cancelled says so and offers no cancel; the other instance the event
        # started (payment-request-expiring) is untouched.
        states = dict(re.findall(r"<header>([\w-]+) · key .*?<strong>(\w+)</strong>", page))
        assert states[form["scenario"]] == "cancelled"
        assert page.count("Cancel scenario…") == len([v for v in states.values() if v == "active"])
    doc = await stack.redis.hget(Keys().scenario(form["scenario"], key), "doc")
    assert json.loads(doc)["status"] == "cancelled"
    entries = await stack.redis.xrange("tocsin:audit")
    assert (b"oncall", b"scenario.cancel", b"ok") in [
        (e[b"actor"], e[b"action"], e[b"outcome"]) for _, e in entries
    ]
