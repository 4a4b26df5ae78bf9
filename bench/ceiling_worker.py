"""Delivery half of the bare reference pipeline: a Redis stream read by a minimal worker.

With ``bench.ceiling_intake`` in front (group-commit XADD), this is the least two
processes can do to turn a posted event into a signed webhook: XREADGROUP up to C
entries (block 1 s), POST each entry's raw body to the sink over one ``ClientSession``
(C in flight), signed like Standard Webhooks with ``gateway.signing.Signer`` (so the
sink's ``--verify`` checks it), XACK in batches once the sink answered 2xx. No rules,
no retries, no dead letters, no metrics, no logging: what Tocsin does on top of this is
what the full-pipeline ratio prices. Its shape follows the peers' run reference
(bench-peers ``stream_worker.py``: another run, not part of this repository).

Stops on SIGTERM after its in-flight posts end. The secret is read from
``BENCH_HOOK_SECRET``.

    python -m bench.ceiling_worker --redis-url redis://127.0.0.1:6390/0 \
        --stream bench:ceiling --url http://127.0.0.1:8081/hook -c 64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from gateway.signing import Signer

from .common import run_loop

GROUP = "ref"


async def work(redis_url: str, stream: str, url: str, conc: int, signer: Signer) -> None:
    redis = Redis.from_url(redis_url)
    with contextlib.suppress(ResponseError):  # already there: read on where it stopped
        await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    slots = asyncio.Semaphore(conc)
    acks: list[bytes] = []
    acked = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as session:

        async def deliver(entry_id: bytes, body: bytes) -> None:
            try:
                headers = signer.headers(f"msg_{entry_id.decode()}", body)
                headers["Content-Type"] = "application/json"
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        acks.append(entry_id)
                        acked.set()
            except aiohttp.ClientError:
                pass  # left pending: the orchestrator's check sees it
            finally:
                slots.release()

        async def acker() -> None:
            while True:
                await acked.wait()
                acked.clear()
                while acks:
                    batch, acks[:] = acks[:512], acks[512:]
                    await redis.xack(stream, GROUP, *batch)

        ack_task = asyncio.create_task(acker())
        stopping = asyncio.create_task(stop.wait())
        while not stop.is_set():
            await slots.acquire()
            free = 1
            while free < conc and not slots.locked():
                await slots.acquire()
                free += 1
            read = asyncio.ensure_future(
                redis.xreadgroup(GROUP, "w", {stream: ">"}, count=free, block=1000)
            )
            done, _ = await asyncio.wait(
                {read, stopping}, timeout=2, return_when=asyncio.FIRST_COMPLETED
            )
            entries = read.result()[0][1] if read in done and read.result() else []
            if read not in done:
                read.cancel()
            for entry_id, fields in entries:
                task = asyncio.create_task(deliver(entry_id, fields[b"e"]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            for _ in range(free - len(entries)):
                slots.release()
        await asyncio.gather(*tasks, return_exceptions=True)
        while acks:
            acked.set()
            await asyncio.sleep(0.01)
        ack_task.cancel()
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--stream", default="bench:ceiling")
    parser.add_argument("--url", required=True, help="the sink's /hook")
    parser.add_argument("-c", "--conc", type=int, default=64)
    args = parser.parse_args()
    signer = Signer([os.environ["BENCH_HOOK_SECRET"]])
    run_loop(work(args.redis_url, args.stream, args.url, args.conc, signer))


if __name__ == "__main__":
    main()
