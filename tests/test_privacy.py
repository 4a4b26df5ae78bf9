"""Data protection end to end: masked history, erasure (``tocsin forget``), retention.

One customer's data is spread through every store by real traffic through a real
gateway (SMTP to aiosmtpd, an email outbox, SMS to the Twilio stand-in with a receipt
and to the SMS outbox, a json_hook receiver, a dead letter, a retry, a running
scenario, an archived record), then ``tocsin forget`` runs as a user runs it, and every
key, stream entry, hash/set/list member of Redis, the archive file and every file of the
data dir (Redis's AOF included) is searched for the customer's email, phone and name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import textwrap
import time
import zlib
from pathlib import Path
from typing import Any

import msgspec
import redis as sync_redis
from redis.asyncio import Redis as AsyncRedis

from gateway.adminapi import AdminContext
from gateway.adminapi.search import search_deliveries
from gateway.archive import (
    ArchivedDelivery,
    Archiver,
    DeliveryQuery,
    SqliteArchive,
    archive_path,
    archived_deliveries,
)
from gateway.conf import load_conf
from gateway.history import DeliveryRecord
from gateway.keys import Layout
from gateway.privacy.recipients import mask, recipient_hash
from gateway.privacy.redact import needles_of
from gateway.redis_server import RedisServer
from gateway.service import Gateway

from .conftest import HOOK_SECRET, INTAKE_SECRET, Receiver, load_plan, make_event
from .procs import tocsin_env
from .sms_standins import TWILIO_SID, TWILIO_TOKEN, TwilioStandIn, delivery_of
from .test_email import StartSmtp, certs, smtp_server  # noqa: F401 - fixtures

EMAIL = "helene.dupont-forget@example.org"
PHONE = "+33612345678"
NAME = "Hélène Dupont-Forget"
CUSTOMER = "cus_gdpr_42"
PUBLIC = "https://hooks.acme.example"
TEMPLATES = {
    "paid/fr/email.subject.j2": "Paiement reçu, {{ customer.name }}",
    "paid/fr/email.txt.j2": "Bonjour {{ customer.name }}, merci pour {{ data.amount }}.",
    "paid/fr/sms.j2": "{{ customer.name }}: paiement {{ refs.invoice_ref }} reçu",
}


def conf_text(smtp_port: int, twilio: TwilioStandIn, hook: str) -> str:
    return textwrap.dedent(
        f"""
        [gateway]
        data_dir = "var"
        [intake]
        secrets = ["{INTAKE_SECRET}"]
        public_url = "{PUBLIC}"
        [redis]
        url = ""
        [worker]
        shutdown_grace = "2s"
        [privacy]
        key = "test-privacy-key-0123456789"
        keep_bodies = true
        [outbound]
        allow = ["127.0.0.0/8"]
        [channels.mail]
        type = "email"
        from_address = "paiements@acme.example"
        backend = "smtp"
        host = "127.0.0.1"
        port = {smtp_port}
        security = "none"
        [channels.mail.delivery]
        retry_schedule = ["0s", "1h"]
        [channels.box]
        type = "email"
        from_address = "paiements@acme.example"
        [channels.smsbox]
        type = "sms"
        sender = "MaBoutique"
        default_region = "FR"
        [channels.sms]
        type = "sms"
        provider = "twilio"
        sender = "MaBoutique"
        default_region = "FR"
        [channels.sms.twilio]
        account_sid = "{TWILIO_SID}"
        auth_token = "{TWILIO_TOKEN}"
        base_url = "{twilio.base_url}"
        status_callback = "{PUBLIC}/v1/receipts/sms"
        [channels.hook]
        type = "json_hook"
        url = "{hook}"
        secret = "{HOOK_SECRET}"
        [channels.broken]
        type = "json_hook"
        url = "{hook}-missing"
        secret = "{HOOK_SECRET}"
        [rules.paid]
        events = ["payment.*"]
        [[rules.paid.actions]]
        channel = "mail"
        template = "paid"
        to = ["customer", "busy@example.com"]
        [[rules.paid.actions]]
        channel = "box"
        template = "paid"
        to = ["customer"]
        [[rules.paid.actions]]
        channel = "smsbox"
        template = "paid"
        to = ["customer"]
        [[rules.paid.actions]]
        channel = "sms"
        template = "paid"
        to = ["customer"]
        [[rules.paid.actions]]
        channel = "hook"
        [[rules.paid.actions]]
        channel = "broken"
        [scenarios.dunning]
        key = "invoice:{{{{ refs.invoice_ref }}}}"
        [scenarios.dunning.trigger]
        events = ["payment.succeeded"]
        [[scenarios.dunning.steps]]
        name = "later"
        after = "30d"
        [[scenarios.dunning.steps.actions]]
        channel = "hook"
        """
    )


def customer_event(invoice: str) -> dict[str, Any]:
    return make_event(
        customer={"id": CUSTOMER, "name": NAME, "email": EMAIL, "phone": PHONE, "locale": "fr"},
        refs={"invoice_ref": invoice},
        data={"amount": 4200, "currency": "EUR", "payer_name": NAME, "note": f"for {EMAIL}"},
        source={"provider": "test", "event_id": "tx_1", "payload": {"billing": {"phone": PHONE}}},
    )


async def until(check: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {check.__doc__}"
        await asyncio.sleep(0.05)


NEEDLES = [n.encode() for n in needles_of([EMAIL, PHONE, NAME])] + [
    NAME.encode(),
    json.dumps(NAME).encode()[1:-1],
]


def traces(blob: bytes) -> list[bytes]:
    low = blob.lower()
    return [n for n in NEEDLES if n.lower() in low]


def scan_redis(url: str) -> list[str]:
    """Every key name and every value, member, field and stream entry of every key."""
    client = sync_redis.Redis.from_url(url)
    found = []
    try:
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            parts: list[bytes] = [key]
            if kind == "string":
                parts.append(client.get(key) or b"")
            elif kind == "hash":
                for k, v in client.hgetall(key).items():
                    parts += [k, v]
            elif kind == "list":
                parts += client.lrange(key, 0, -1)
            elif kind == "set":
                parts += list(client.smembers(key))
            elif kind == "zset":
                parts += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
            elif kind == "stream":
                for entry_id, fields in client.xrange(key):
                    parts.append(entry_id)
                    for k, v in fields.items():
                        parts += [k, v]
            for part in parts:
                if traces(part):
                    found.append(f"{key!r} ({kind}): {part[:120]!r}")
    finally:
        client.close()
    return found


def inflated(blob: bytes) -> bytes:
    """``blob`` plus every zlib stream found in it, inflated: the archive compresses its
    rows, so a byte search alone would miss a value left in a row or a free page."""
    out = [blob]
    start = blob.find(b"\x78\x9c")
    while start != -1:
        with contextlib.suppress(zlib.error):
            out.append(zlib.decompressobj().decompress(blob[start : start + (1 << 20)]))
        start = blob.find(b"\x78\x9c", start + 1)
    return b"\n".join(out)


def scan_files(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_socket():
            hits = traces(inflated(path.read_bytes()))
            if hits:
                found.append(f"{path.relative_to(root)}: {hits}")
    return found


async def scan_files_apart(root: Path) -> list[str]:
    """``scan_files`` in a process of its own, for files a gateway running in this one
    holds open: closing any descriptor of a live SQLite file drops every POSIX lock this
    process holds on it, the gateway's connection's too, and another process then takes
    itself for the only one and checkpoints the WAL from under it: rows are lost
    (sqlite.org/howtocorrupt.html, 2.2)."""
    code = (
        "import json, sys; from pathlib import Path; from tests.test_privacy import scan_files; "
        "print(json.dumps(scan_files(Path(sys.argv[1]))))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, str(root), cwd=Path(__file__).parent.parent,
        env=tocsin_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    found: list[str] = json.loads(out)
    return found


async def test_forget_leaves_no_trace_in_any_store(
    tmp_path,
    request,
    smtp_server: StartSmtp,  # noqa: F811
    receiver: Receiver,
    twilio: TwilioStandIn,
):
    smtp = await smtp_server()
    conf_path = tmp_path / "tocsin.toml"
    conf_path.write_text(conf_text(smtp.port, twilio, receiver.url))
    for name, text in TEMPLATES.items():
        (tmp_path / "templates" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "templates" / name).write_text(text)
    data_dir = tmp_path / "var"
    server = RedisServer(data_dir / "redis")
    url = server.start()
    request.addfinalizer(server.stop)
    client = sync_redis.Redis.from_url(url)
    # Uncompressed snapshots in the AOF's base file: the byte scan below can then see a
    # value that is there (LZF would hide it from a byte search, not from a restore).
    client.config_set("rdbcompression", "no")
    layout = Layout("tocsin")
    keys = layout.shards[0]
    gateway = Gateway(load_plan(conf_path), url, port=0)
    stopping = asyncio.Event()
    task = asyncio.create_task(gateway.run(stopping))
    try:
        await asyncio.wait_for(gateway.ready.wait(), 10)
        gw = f"http://127.0.0.1:{gateway.bound_port}"

        async def post(event: dict[str, Any]) -> None:
            from .conftest import signed_headers  # noqa: PLC0415

            body = json.dumps(event).encode()
            import aiohttp  # noqa: PLC0415

            async with (
                aiohttp.ClientSession() as session,
                session.post(gw + "/v1/events", data=body, headers=signed_headers(body)) as r,
            ):
                assert r.status == 202, await r.text()

        # 1. An old event, archived by an archiver whose clock runs 10 days ahead.
        await post(customer_event("FA-OLD-1"))
        await until(lambda: _ready(client, keys, 1), "the first event's deliveries")
        store = await SqliteArchive.open(archive_path(data_dir))
        try:
            future = Archiver(
                gateway_redis(url), keys, store, hot_window=3600, retention=90 * 86400,
                owner="test", clock=lambda: time.time() + 10 * 86400,
            )  # fmt: skip
            moved = await future.archive_once()
            await future.redis.aclose()
        finally:
            await store.close()
        assert moved.events >= 1 and moved.deliveries >= 1

        # 2. A fresh one, in Redis's hot window: every store fills again.
        await post(customer_event("FA-NEW-2"))
        await until(lambda: _ready(client, keys, 1), "the second event's deliveries")
        *_, message = await twilio.wait_for(2)
        status, _ = await twilio.send_receipt(message, "delivered", via=gw)
        assert status == 200
        assert client.exists(f"tocsin:receipts:{delivery_of(message)}")
        assert smtp.received and receiver.received
        assert list((data_dir / "outbox" / "email").glob("*.eml"))
        assert PHONE in (data_dir / "outbox" / "sms.jsonl").read_text()
        assert client.xlen(keys.dead) >= 1 and client.zcard(keys.retries) >= 1
        instance = json.loads(client.hget(keys.scenario("dunning", "invoice:FA-NEW-2"), "doc"))
        assert instance["status"] == "active"

        # History keeps the recipient masked and hashed, never in clear.
        record = _record_to(client, keys, "box")
        assert record["to"] == mask(EMAIL) != EMAIL
        assert record["to_hash"] == recipient_hash(b"test-privacy-key-0123456789", EMAIL)
        assert record["customer"] == CUSTOMER and record["template"] == "paid"
        assert record["template_version"] and record["vars"]["data"]["amount"] == 4200
        assert scan_redis(url), "the scan must see the data before erasure"
        seen = " ".join(await scan_files_apart(data_dir))
        for where in ("appendonlydir", "history.sqlite3", "outbox/email", "sms.jsonl"):
            assert where in seen, f"the file scan must see the data in {where} first: {seen}"

        # Support finds the customer's deliveries, both tiers, by the full address (any
        # case): the CLI and the API's operation match the records' keyed hash.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "deliveries", "--to", EMAIL.upper(),
            "--json", "--conf", str(conf_path),
            env=tocsin_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        found = [json.loads(line) for line in out.decode().splitlines()]
        assert {r["vars"]["refs"]["invoice_ref"] for r in found} == {"FA-OLD-1", "FA-NEW-2"}
        assert {r["to"] for r in found} == {mask(EMAIL)}, found
        api_client = AsyncRedis.from_url(url)
        api_store = await SqliteArchive.open(archive_path(data_dir))
        try:
            key = b"test-privacy-key-0123456789"
            ctx = AdminContext(api_client, layout, api_store, 86400.0, privacy_key=key)
            page = await search_deliveries(ctx, to=f" {EMAIL.upper()} ", limit=500)
            assert sorted(i["id"] for i in page.items) == sorted(r["id"] for r in found)
            assert not (await search_deliveries(ctx, to="nobody@example.com")).items
        finally:
            await api_store.close()
            await api_client.aclose()

        # 3. Erase, with the gateway running, as an operator does.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "forget", "--customer", CUSTOMER,
            "--json", "--actor", "dpo@acme", "--conf", str(conf_path),
            env=tocsin_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        report = json.loads(out)
        changed = report["changed"]
        for name in (
            "events_redacted", "deliveries_redacted", "dead_letters_deleted", "retries_dropped",
            "scenarios_cancelled", "receipts_deleted", "bodies_deleted", "archive_events",
            "archive_deliveries", "outbox_files_deleted", "outbox_lines_deleted",
        ):  # fmt: skip
            assert changed.get(name, 0) >= 1, (name, changed)
        assert report["aof_rewritten"] is True

        instance = json.loads(client.hget(keys.scenario("dunning", "invoice:FA-NEW-2"), "doc"))
        assert instance["status"] == "cancelled"
        assert client.zcard(keys.timers) == 0
        [entry] = client.xrange("tocsin:audit")[-1:]
        audit = {k.decode(): v.decode() for k, v in entry[1].items()}
        assert audit["actor"] == "dpo@acme" and audit["action"] == "forget"
        assert audit["target"] == f"customer:{CUSTOMER}" and audit["outcome"] == "ok"
    finally:
        stopping.set()
        await asyncio.wait_for(task, 15)

    # What accounting needs stays: the redacted events, in the archive.
    store = await SqliteArchive.open(archive_path(data_dir))
    try:
        kept = await store.customer_events(CUSTOMER)
    finally:
        await store.close()
    assert {msgspec.json.decode(e.raw)["refs"]["invoice_ref"] for e in kept} == {
        "FA-OLD-1",
        "FA-NEW-2",
    }
    assert all(msgspec.json.decode(e.raw)["data"]["amount"] == 4200 for e in kept)

    # 4. No trace anywhere: Redis, then every file of the data dir (AOF, archive, outboxes).
    assert scan_redis(url) == []
    client.close()
    server.stop()
    assert scan_files(data_dir) == []


def gateway_redis(url: str) -> Any:
    from gateway.redis_client import connect  # noqa: PLC0415

    return connect(url)


async def _ready(client: sync_redis.Redis, keys: Any, _: int) -> bool:
    """Every job of the last event settled: no stream holds a job, the retry is parked."""
    for name in ("mail", "box", "smsbox", "sms", "hook", "broken"):
        if client.xlen(keys.deliveries(name)):
            pending = client.xpending(keys.deliveries(name), "workers")
            if pending["pending"] or client.xlen(keys.deliveries(name)):
                return False
    lag = client.xinfo_groups(keys.events)
    return all(g["lag"] == 0 and g["pending"] == 0 for g in lag) and client.zcard(keys.retries) > 0


def _record_to(client: sync_redis.Redis, keys: Any, channel: str) -> dict[str, Any]:
    for member in client.zrange(keys.history, 0, -1):
        record = json.loads(client.get(keys.record(member.decode())) or b"{}")
        if record.get("channel") == channel and record.get("status") == "delivered":
            return record
    raise AssertionError(f"no delivered record on {channel}")


def test_masks_and_hash():
    assert mask("jeanne.dupont@example.com") == "j***@e***.com"
    assert mask("+33612345678") == "+336******78"
    key = b"k"
    assert recipient_hash(key, "Jeanne@Example.com") == recipient_hash(key, "jeanne@example.com")
    assert recipient_hash(key, "+33 6 12 34 56 78") == recipient_hash(key, "+33612345678")
    assert recipient_hash(b"other", "jeanne@example.com") != recipient_hash(
        key, "jeanne@example.com"
    )
    assert load_conf  # the conf module loads [privacy] (checked end to end above)


async def test_archive_search_by_address_pages_through_ties(tmp_path: Path):
    """30 records share each millisecond (where the version-1 scan's 1,000-row pages
    ended amid ties): every match is found once, newest first, within ``since``."""
    key = b"k" * 32
    wanted = recipient_hash(key, EMAIL)
    base = 1_700_000_000_000
    records = [
        DeliveryRecord(
            id=f"d{i:05}",
            event_id=f"e{i}",
            event_type="payment.succeeded",
            rule="paid",
            channel="box",
            status="delivered",
            updated=(base + i // 30) / 1000,
            to_hash=wanted if i % 7 == 0 else recipient_hash(key, f"other{i}@example.org"),
        )
        for i in range(2500)
    ]
    store = await SqliteArchive.open(tmp_path / "history.sqlite3")
    try:
        await store.put_deliveries([ArchivedDelivery.of(r) for r in records])
        found = await archived_deliveries(store, DeliveryQuery(to_hash=wanted, limit=1000))
        expected = sorted((r for r in records if r.to_hash == wanted), key=lambda r: -r.updated)
        assert sorted(r.id for r in found) == sorted(r.id for r in expected)
        assert [r.updated for r in found] == [r.updated for r in expected]
        newest = await archived_deliveries(store, DeliveryQuery(to_hash=wanted, limit=3))
        assert [r.updated for r in newest] == [r.updated for r in expected[:3]]
        since = (base + 70) / 1000  # records 2100 and up
        late = await archived_deliveries(
            store, DeliveryQuery(to_hash=wanted, since=since, limit=1000)
        )
        assert sorted(r.id for r in late) == [r.id for r in records[2100:] if r.to_hash == wanted]
    finally:
        await store.close()
