"""The suppression list's cost: memory per entry, and the worker's check per delivery.

    .venv/bin/python -m bench.suppression [--entries N] [--checks M]

Redis runs like the embedded one (AOF on, ``appendfsync always``; a check is a read,
which AOF does not slow). Figures:

- bytes per entry, one hash + expiry zset (what ``gateway.suppression`` stores) against
  one key per address with a TTL, from ``used_memory`` before and after N entries (a
  third of them expiring);
- µs per check: ``SuppressionList.get`` (one HGET + decode) for M addresses, half listed,
  awaited one after another, then 64 at a time as the worker's concurrent sends do, next
  to a bare PING on the same client (the floor for any one-command step);
- µs to find a delivery's address (``address_of``): an email, and a national phone
  number through the sms channel (``phonenumbers``, remembered per number: the send
  reads the same number again, so the loop measures the remembered path).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import redis as sync_redis

from gateway.channel import ChannelContext
from gateway.delivery import Delivery, Recipient
from gateway.redis_client import connect
from gateway.redis_server import RedisServer, free_port
from gateway.suppression import SuppressionList, address_of
from gateway.suppression.store import Entry, encode_entry
from gateway.templating import Templates


def used(client: sync_redis.Redis) -> int:
    info: Any = client.info("memory")
    return int(info["used_memory"])


def memory(client: sync_redis.Redis, n: int) -> tuple[float, float]:
    now = time.time()
    entries = [
        Entry(
            address=f"client{i:07d}@example.com",
            reason="unsubscribed",
            author="cli:ops",
            at=now,
            until=now + 86400 if i % 3 == 0 else None,
        )
        for i in range(n)
    ]
    client.flushall()
    before = used(client)
    pipe = client.pipeline(transaction=False)
    for e in entries:
        pipe.hset("tocsin:{suppression}", e.address, encode_entry(e))
        if e.until is not None:
            pipe.zadd("tocsin:{suppression}:expiry", {e.address: e.until})
    pipe.execute()
    one_hash = (used(client) - before) / n
    client.flushall()
    before = used(client)
    pipe = client.pipeline(transaction=False)
    for e in entries:
        key = f"tocsin:suppressed:{e.address}"
        pipe.set(key, encode_entry(e), ex=86400 if e.until is not None else None)
        pipe.zadd("tocsin:suppressed", {e.address: e.at})  # listing without SCAN needs it
    pipe.execute()
    per_key = (used(client) - before) / n
    return one_hash, per_key


async def checks(url: str, n: int, m: int) -> tuple[float, float, float]:
    redis = connect(url)
    listed = SuppressionList(redis, "tocsin")
    now = time.time()
    await listed.load(
        [
            Entry(address=f"client{i:07d}@example.com", reason="unsubscribed", author="x", at=now)
            for i in range(n)
        ]
    )
    addresses = [f"client{i * 2:07d}@example.com" for i in range(m)]  # half of them listed
    start = time.perf_counter()
    found = 0
    for a in addresses:
        found += await listed.get(a) is not None
    sequential = (time.perf_counter() - start) / m * 1e6
    semaphore = asyncio.Semaphore(64)

    async def one(a: str) -> None:
        async with semaphore:
            await listed.get(a)

    start = time.perf_counter()
    await asyncio.gather(*(one(a) for a in addresses))
    concurrent = (time.perf_counter() - start) / m * 1e6
    start = time.perf_counter()
    for _ in addresses:
        await redis.ping()
    ping = (time.perf_counter() - start) / m * 1e6
    await redis.aclose()
    assert found == min(m, (n + 1) // 2), found
    return sequential, concurrent, ping


def addresses(tmp: Path, rounds: int = 20000) -> tuple[float, float]:
    from gateway_sms.channel import SmsChannel  # noqa: PLC0415
    from gateway_sms.config import SmsConfig  # noqa: PLC0415

    context = ChannelContext(
        templates=Templates(tmp, "fr", {}), data_dir=tmp / "var", default_locale="fr"
    )
    sms = SmsChannel(
        "sms",
        msgspec.convert({"sender": "Acme", "default_region": "FR"}, SmsConfig),
        context,
    )

    def job(recipient: Recipient) -> Delivery:
        return Delivery(
            id="msg_1",
            event_id="evt_1",
            event_type="payment.succeeded",
            rule="r",
            channel="c",
            event=msgspec.Raw(b"{}"),
            recipient=recipient,
        )

    class Mail:  # what address_of reads of an email channel
        name, type_name, recipient_field = "mail", "email", "email"

    mail = job(Recipient(kind="customer", email="Client@Example.com"))
    phone = job(Recipient(kind="customer", phone="06 12 34 56 78"))
    start = time.perf_counter()
    for _ in range(rounds):
        address_of(Mail(), mail)  # type: ignore[arg-type]
    email_us = (time.perf_counter() - start) / rounds * 1e6
    start = time.perf_counter()
    for _ in range(rounds):
        address_of(sms, phone)
    phone_us = (time.perf_counter() - start) / rounds * 1e6
    return email_us, phone_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--checks", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tocsin-bench-suppression-") as scratch:
        server = RedisServer(Path(scratch), port=free_port())
        url = server.start()
        try:
            client = sync_redis.Redis.from_url(url)
            one_hash, per_key = memory(client, args.entries)
            client.flushall()
            sequential, concurrent, ping = asyncio.run(checks(url, args.entries, args.checks))
            client.close()
        finally:
            server.stop()
        email_us, phone_us = addresses(Path(scratch))
    print(f"entries: {args.entries}, checks: {args.checks}")
    print(
        f"memory per entry: one hash + expiry zset {one_hash:.0f} B, "
        f"key per address {per_key:.0f} B"
    )
    print(
        f"check (HGET + decode): {sequential:.1f} µs awaited alone, {concurrent:.1f} µs at 64; "
        f"a PING round trip on the same client: {ping:.1f} µs"
    )
    print(f"finding the address: email {email_us:.1f} µs, national phone (sms) {phone_us:.1f} µs")


if __name__ == "__main__":
    main()
