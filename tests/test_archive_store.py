"""The archive's contract, call by call, on each backend in turn (SQLite; a real
PostgreSQL server): the same rows in, the same answers out. What the archiver, the
commands, erasure and retention rely on; and the conf that selects the backend."""

from __future__ import annotations

import asyncio
import fnmatch
import re
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from gateway.archive import (
    ArchivedDeadLetter,
    ArchivedDelivery,
    ArchivedEvent,
    ArchiveStore,
    DeliveryQuery,
    EventQuery,
)
from gateway.archive.postgres import glob_regex
from gateway.cli import main as cli
from gateway.conf import read_conf
from gateway.history import DeliveryRecord
from gateway.privacy.redact import needles_of
from gateway.redis_server import free_port

from .conftest import write_conf
from .postgres_server import Backend

BASE = 1_790_000_000_000  # ms
TYPES = ["payment.succeeded", "payment.failed", "refund.created", "payment.s", "mandate.x"]


@pytest.fixture
async def store(archive_backend: Backend, tmp_path: Path) -> AsyncIterator[ArchiveStore]:
    opened = await archive_backend.open(tmp_path)
    yield opened
    await opened.close()


def _event(n: int, *, customer: str | None = "cus_a", shard: int = 0, ms: int = 0) -> ArchivedEvent:
    accepted = BASE + (ms or n * 1000)
    body = {
        "id": f"evt_{n}", "type": TYPES[n % len(TYPES)],
        "customer": {"id": customer, "email": f"{customer}@example.com", "name": "Ada Lovelace"},
        "refs": {"invoice_ref": f"FA-{n}"}, "data": {"amount": 1200 + n, "note": "for Ada"},
    }  # fmt: skip
    return ArchivedEvent(
        f"evt_{n}", shard, f"{accepted}-{shard}", accepted, TYPES[n % len(TYPES)],
        customer, f"FA-{n}", msgspec.json.encode(body),
    )  # fmt: skip


def _record(n: int, *, status: str = "delivered", at: float = 0.0) -> ArchivedDelivery:
    return ArchivedDelivery.of(
        DeliveryRecord(
            id=f"msg_{n}", event_id=f"evt_{n}", event_type="payment.succeeded", rule="r",
            channel="hook" if n % 2 else "mail", status=status,
            updated=at or (BASE + n * 1000 + 500) / 1000, to="ada@example.com",
        )
    )  # fmt: skip


def _dead(n: int, *, channel: str = "hook", customer: str = "cus_a") -> ArchivedDeadLetter:
    job = {"id": f"msg_d{n}", "event_id": f"evt_{n}", "event": {"customer": {"id": customer}}}
    return ArchivedDeadLetter(
        shard=0, entry=f"{BASE + n}-0", at=BASE + n * 1000, kind="delivery", channel=channel,
        delivery_id=f"msg_d{n}", event_id=f"evt_{n}", reason="410 Gone", status=410,
        payload=msgspec.json.encode(job),
    )  # fmt: skip


async def test_writes_are_idempotent_and_a_newer_record_replaces_the_older(
    store: ArchiveStore,
) -> None:
    events = [_event(1), _event(2, customer="cus_b"), _event(2, customer="cus_b", shard=1)]
    await store.put_events(events)
    await store.put_events(events)  # a pass redone after a crash
    assert len(await store.customer_events("cus_b")) == 2  # two shards: two rows, once each
    await store.put_deliveries([_record(1), _record(2), _record(3)])  # evt_3 not archived
    newer = _record(1, status="dead", at=(BASE + 9000) / 1000)
    await store.put_deliveries([newer, newer])

    got = await store.get_delivery("msg_1")
    assert got is not None and (got.status, got.updated) == ("dead", (BASE + 9000) / 1000)
    assert [r.id for r in await store.find_deliveries(DeliveryQuery(customer_id="cus_a"))] == [
        "msg_1"
    ]
    # A record takes its customer and invoice ref from its event; without one, neither.
    found = await store.find_deliveries(DeliveryQuery(invoice_ref="FA-2"))
    assert [r.id for r in found] == ["msg_2"]
    assert await store.find_deliveries(DeliveryQuery(invoice_ref="FA-3")) == []
    assert [r.id for r in await store.find_deliveries(DeliveryQuery(event_id="evt_3"))] == ["msg_3"]
    assert set(await store.get_deliveries(["msg_1", "msg_3", "msg_nope"])) == {"msg_1", "msg_3"}
    assert await store.get_deliveries([]) == {}
    # Newest first, time window on the last update, channel and status filters.
    every = await store.find_deliveries(DeliveryQuery(limit=10))
    assert [r.id for r in every] == ["msg_1", "msg_3", "msg_2"]
    window = DeliveryQuery(since=(BASE + 2000) / 1000, until=(BASE + 9000) / 1000, channel="hook")
    assert [r.id for r in await store.find_deliveries(window)] == ["msg_3"]
    assert [r.id for r in await store.find_deliveries(DeliveryQuery(status="dead"))] == ["msg_1"]


async def test_events_newest_first_by_type_glob_time_and_cursor(store: ArchiveStore) -> None:
    # Two events in the same millisecond (two shards): the entry id orders them.
    rows = [_event(n) for n in range(1, 11)] + [_event(11, shard=1, ms=10_000)]
    await store.put_events(rows)
    got = await store.get_event("evt_4")
    assert got is not None and got.raw == rows[3].raw and got.invoice_ref == "FA-4"
    assert await store.get_event("evt_nope") is None

    for glob in ["payment.*", "payment.s*", "*.[a-r]*", "?efund.*", "payment.?", "[mr]*", "x"]:
        listed = await store.list_events(type_glob=glob, since=None, limit=50)
        expected = [r for r in rows if fnmatch.fnmatchcase(r.type, glob)]
        assert {e.event_id for e in listed} == {r.event_id for r in expected}, glob
        assert [e.accepted for e in listed] == sorted((e.accepted for e in listed), reverse=True)
    recent = await store.list_events(type_glob=None, since=(BASE + 9000) / 1000, limit=50)
    assert {e.event_id for e in recent} == {"evt_9", "evt_10", "evt_11"}

    # Paging with the cursor (accepted ms, entry id) yields each event once, in order.
    pages: list[str] = []
    before: tuple[int, str] | None = None
    while page := await store.find_events(EventQuery(customer_id="cus_a", before=before, limit=3)):
        pages += [e.event_id for e in page]
        before = (page[-1].accepted, page[-1].entry)
    assert pages == ["evt_11", "evt_10", *(f"evt_{n}" for n in range(9, 0, -1))]
    by_invoice = await store.find_events(EventQuery(invoice_ref="FA-7"))
    assert [e.event_id for e in by_invoice] == ["evt_7"]
    until = EventQuery(since=(BASE + 2000) / 1000, until=(BASE + 4000) / 1000)
    assert [e.event_id for e in await store.find_events(until)] == ["evt_3", "evt_2"]


def test_globs_read_as_sqlite_reads_them() -> None:
    assert glob_regex("payment.*") == r"^payment\..*$"
    assert glob_regex("[!a-c]?x") == "^[^a-c].x$"
    assert glob_regex("a[") == r"^a\[$"


async def test_dead_letters_oldest_first_and_replayed_once(store: ArchiveStore) -> None:
    letters = [_dead(3), _dead(1, channel="mail"), _dead(2)]
    await store.put_dead_letters(letters)
    await store.put_dead_letters(letters)
    listed = await store.dead_letters(channel=None, since=None, limit=None)
    assert [d.delivery_id for d in listed] == ["msg_d1", "msg_d2", "msg_d3"]
    assert listed[0] == letters[1]  # every field as written
    hooks = await store.dead_letters(channel="hook", since=(BASE + 2500) / 1000, limit=5)
    assert [d.delivery_id for d in hooks] == ["msg_d3"]
    assert len(await store.dead_letters(channel=None, since=None, limit=1)) == 1

    target = listed[1]
    claims = await asyncio.gather(
        *(store.claim_dead_letter(target.shard, target.entry, BASE) for _ in range(4))
    )
    assert sorted(claims) == [False, False, False, True]
    left = await store.dead_letters(channel=None, since=None, limit=None)
    assert [d.delivery_id for d in left] == ["msg_d1", "msg_d3"]
    await store.unclaim_dead_letter(target.shard, target.entry)  # the replay failed
    assert len(await store.dead_letters(channel=None, since=None, limit=None)) == 3


async def test_erasure_rewrites_one_customers_rows_and_no_one_elses(store: ArchiveStore) -> None:
    await store.put_events(
        [_event(1), _event(2), _event(3, customer="cus_b"), _event(4, customer=None)]
    )
    await store.put_deliveries([_record(n) for n in (1, 2, 3, 4)])
    await store.put_dead_letters([_dead(1), _dead(3, customer="cus_b")])
    needles = needles_of(["cus_a@example.com", "Ada Lovelace"])

    # evt_4 has no customer column: erasure names it by id (found in Redis's history).
    counts = await store.erase_customer("cus_a", ["evt_4"], needles)
    assert counts == {"events": 3, "deliveries": 3, "dead_letters": 1}
    for n in (1, 2):
        event = await store.get_event(f"evt_{n}")
        assert event is not None and b"example.com" not in event.raw and b"Ada" not in event.raw
        body = msgspec.json.decode(event.raw)
        assert body["customer"] == {"id": "cus_a"} and body["data"]["amount"] == 1200 + n
        record = await store.get_delivery(f"msg_{n}")
        assert record is not None and record.to == "[erased]" and record.status == "delivered"
    other = await store.get_event("evt_3")
    assert other is not None and b"cus_b@example.com" in other.raw
    other_record = await store.get_delivery("msg_3")
    assert other_record is not None and other_record.to == "ada@example.com"
    assert [
        d.delivery_id for d in await store.dead_letters(channel=None, since=None, limit=None)
    ] == ["msg_d3"]
    # Rows stay findable by customer (the id is kept), and again changes nothing more.
    assert len(await store.find_deliveries(DeliveryQuery(customer_id="cus_a"))) == 2
    again = await store.erase_customer("cus_a", ["evt_4"], needles)
    assert again["dead_letters"] == 0
    assert await store.get_event("evt_2") == event  # as the first erasure left it

    assert await store.delete_customer("cus_b") == 3  # event, record, dead letter
    assert await store.get_event("evt_3") is None and await store.get_delivery("msg_3") is None


async def test_retention_drops_each_kind_in_bounded_steps(store: ArchiveStore) -> None:
    await store.put_events([_event(n) for n in range(1, 8)])
    await store.put_deliveries([_record(n) for n in range(1, 8)])
    await store.put_dead_letters([_dead(n) for n in range(1, 8)])
    cutoff = BASE + 5000  # events 1-4, records 1-4 (updated n s + 0.5), letters 1-4

    assert await store.drop_kind_before("events", cutoff, 2, dry_run=True) == 4
    assert await store.get_event("evt_1") is not None  # a dry run removes nothing
    assert await store.drop_kind_before("events", cutoff, 3) == 3
    assert await store.drop_kind_before("events", cutoff, 3) == 1
    assert await store.drop_kind_before("events", cutoff, 3) == 0
    assert await store.get_event("evt_4") is None and await store.get_event("evt_5") is not None
    assert await store.get_delivery("msg_1") is not None  # other kinds untouched

    assert await store.drop_before(cutoff, 3) == 3 + 3  # records and letters, 3 each
    assert await store.drop_before(cutoff, 3) == 1 + 1
    assert await store.drop_before(cutoff, 3) == 0
    assert (
        await store.get_delivery("msg_4") is None and await store.get_delivery("msg_5") is not None
    )
    left = await store.dead_letters(channel=None, since=None, limit=None)
    assert [d.delivery_id for d in left] == ["msg_d5", "msg_d6", "msg_d7"]


# -- conf ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "where", "reason"),
    [
        ('archive = "postgresql"', "history.archive_url", "required with archive"),
        (
            'archive = "postgresql"\narchive_url = "mysql://u:hunter2pw@db/x"',
            "history.archive_url",
            "not a postgresql:// URL",
        ),
        (
            'archive = "postgresql"\narchive_url = "postgresql://u:hunter2pw@db:99999/x"',
            "history.archive_url",
            "port is not a number",
        ),
        (
            'archive_url = "postgresql://u:hunter2pw@db/x"',
            "history.archive_url",
            'only read with archive = "postgresql"',
        ),
        (
            'archive = "postgresql"\narchive_url = "postgresql://db/x"\narchive_schema = "Bad-1"',
            "history.archive_schema",
            "a lower-case SQL name",
        ),
        ('archive = "mysql"', "history.archive", "Invalid enum value 'mysql'"),
    ],
)
def test_conf_errors_name_file_line_and_reason_never_the_password(
    tmp_path: Path, history: str, where: str, reason: str
) -> None:
    path = write_conf(tmp_path, redis_url="redis://127.0.0.1:9", extra=f"[history]\n{history}\n")
    _, problems = read_conf(path)
    assert len(problems) == 1, problems
    assert re.match(rf"{re.escape(str(path))}:\d+: {re.escape(where)}: ", problems[0]), problems
    assert reason in problems[0]
    assert "hunter2pw" not in problems[0]


def test_conf_reads_the_url_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOCSIN_ARCHIVE_URL", "postgresql://tocsin:s3cret@db.internal/tocsin")
    extra = '[history]\narchive = "postgresql"\narchive_url = "${TOCSIN_ARCHIVE_URL}"\n'
    conf, problems = read_conf(write_conf(tmp_path, redis_url="redis://127.0.0.1:9", extra=extra))
    assert problems == [] and conf is not None
    assert conf.history.archive_url is not None and "s3cret" not in repr(conf.history)
    assert conf.history.archive_url.reveal().endswith("@db.internal/tocsin")


def test_a_command_names_an_unreachable_archive_server_without_its_password(
    tmp_path: Path, redis_url: str
) -> None:
    url = f"postgresql://tocsin:hunter2pw@127.0.0.1:{free_port()}/tocsin"
    extra = f'[history]\narchive = "postgresql"\narchive_url = "{url}"\n'
    conf = write_conf(tmp_path, redis_url=redis_url, extra=extra)
    out = CliRunner().invoke(cli, ["deliveries", "--conf", str(conf)])
    assert out.exit_code != 0
    assert "history archive on PostgreSQL (schema tocsin)" in out.output, out.output
    assert "Connection refused" in out.output or "connection failed" in out.output
    assert "hunter2pw" not in out.output
