"""Load generators posting signed canonical events to an intake (Tocsin's or the ceiling's).

``closed``: N events, C connections each posting its next event as soon as the previous
answer arrived (a closed loop: the rate is what the server sustains). Bodies and
Standard Webhooks headers are built and signed *before* the timed loop, so the client's
CPU goes to HTTP only.

``paced``: an open loop at R events/s for D seconds. Each event is built at its send
time with ``data.ts = time.time()`` and signed then, so the sink can measure
intake-to-receipt latency. At most ``--max-inflight`` requests are outstanding; a tick
that finds them all busy waits (counted as ``stalled``).

Both print one JSON line. The secret is read from ``BENCH_INTAKE_SECRET``.

    python -m bench.loadgen closed --url http://127.0.0.1:8088/v1/events -n 20000 -c 64
    python -m bench.loadgen paced --url ... --rate 1000 --duration 5

``retrying``: ``paced``, but each event is posted again until acknowledged, as a payment
provider does (the fault phase); the acknowledged ids go to ``--acks FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import Counter
from collections.abc import Coroutine
from typing import Any

import aiohttp

from gateway.signing import Signer

from .common import (
    bounded,
    box_busy_seconds,
    emit_result,
    encode,
    latency_summary_ms,
    make_event,
    run_loop,
)


def _signed(signer: Signer, event_id: str, body: bytes) -> dict[str, str]:
    headers = signer.headers(event_id, body)
    headers["Content-Type"] = "application/json"
    return headers


async def closed(url: str, n: int, conc: int, id_prefix: str, signer: Signer) -> dict:
    now = time.time()
    requests = []
    for i in range(n):
        event_id = f"{id_prefix}{i:08d}"
        body = encode(make_event(event_id, now, i))
        requests.append((body, _signed(signer, event_id, body)))
    body_bytes = sum(len(b) for b, _ in requests) / max(1, n)
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    next_index = 0

    connector = aiohttp.TCPConnector(limit=conc)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal next_index
            while next_index < n:
                body, headers = requests[next_index]
                next_index += 1
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        status = str(response.status)
                except aiohttp.ClientError as exc:
                    status = type(exc).__name__
                latencies.append(time.perf_counter() - started)
                statuses[status] += 1

        cpu0, box0 = time.process_time(), box_busy_seconds()
        wall_start = time.time()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        elapsed = time.perf_counter() - t0
        cpu_loop = time.process_time() - cpu0
        box_busy = box_busy_seconds() - box0
    return {
        "mode": "closed",
        "n": n,
        "concurrency": conc,
        "body_bytes": round(body_bytes),
        "accepted": statuses.get("202", 0),
        "statuses": dict(statuses),
        "t_start": wall_start,
        "elapsed_s": round(elapsed, 4),
        "rate": round(n / elapsed, 1),
        "ack_ms": latency_summary_ms(latencies),
        "cpu_loop_s": round(cpu_loop, 3),
        "box_busy_s": round(box_busy, 3),
    }


async def paced(
    url: str, rate: float, duration: float, max_inflight: int, id_prefix: str, signer: Signer
) -> dict:
    n = int(rate * duration)
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    slots = asyncio.Semaphore(max_inflight)
    stalled = 0
    late_ms_max = 0.0

    connector = aiohttp.TCPConnector(limit=max_inflight)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            try:
                event_id = f"{id_prefix}{i:08d}"
                body = encode(make_event(event_id, time.time(), i))
                headers = _signed(signer, event_id, body)
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        status = str(response.status)
                except aiohttp.ClientError as exc:
                    status = type(exc).__name__
                latencies.append(time.perf_counter() - started)
                statuses[status] += 1
            finally:
                slots.release()

        tasks = []
        cpu0, box0 = time.process_time(), box_busy_seconds()
        t0 = time.perf_counter()
        for i in range(n):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late_ms_max = max(late_ms_max, -delay * 1000)
            if slots.locked():
                stalled += 1
            await slots.acquire()
            tasks.append(asyncio.create_task(one(i)))
        send_elapsed = time.perf_counter() - t0
        await asyncio.gather(*tasks)
        cpu_loop = time.process_time() - cpu0
        box_busy = box_busy_seconds() - box0
    return {
        "mode": "paced",
        "n": n,
        "rate_offered": rate,
        "duration_s": duration,
        "accepted": statuses.get("202", 0),
        "statuses": dict(statuses),
        "achieved_rate": round(n / send_elapsed, 1) if send_elapsed else None,
        "stalled_ticks": stalled,
        "late_ms_max": round(late_ms_max, 3),
        "ack_ms": latency_summary_ms(latencies),
        "elapsed_s": round(send_elapsed, 4),
        "cpu_loop_s": round(cpu_loop, 3),
        "box_busy_s": round(box_busy, 3),
    }


#: A retrying producer's pause between tries of one event (providers back off longer;
#: this keeps the backlog a fault builds as large as the load made it).
RETRY_PAUSE = 0.1


async def retrying(
    url: str,
    rate: float,
    duration: float,
    max_inflight: int,
    id_prefix: str,
    signer: Signer,
) -> dict:
    """``paced``, as a payment provider posts: each event is tried again (same id, same
    body) until it is acknowledged (202, or 200: an earlier try was stored), so a gateway
    or Redis going down delays events but cannot drop them. The result lists each
    acknowledged id with when (epoch seconds)."""
    n = int(rate * duration)
    answers: Counter[str] = Counter()
    acked: list[tuple[str, float]] = []
    refused: Counter[str] = Counter()
    slots = asyncio.Semaphore(max_inflight)
    stalled = 0

    connector = aiohttp.TCPConnector(limit=max_inflight)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> None:
            try:
                event_id = f"{id_prefix}{i:08d}"
                body = encode(make_event(event_id, time.time(), i))
                while True:
                    headers = _signed(signer, event_id, body)  # a fresh timestamp per try
                    try:
                        async with session.post(url, data=body, headers=headers) as response:
                            await response.read()
                            status = str(response.status)
                    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                        status = type(exc).__name__
                    answers[status] += 1
                    if status in ("200", "202"):
                        acked.append((event_id, time.time()))
                        return
                    if status.startswith("4") and status not in ("408", "429"):
                        refused[status] += 1  # a provider would not try again
                        return
                    await asyncio.sleep(RETRY_PAUSE)
            finally:
                slots.release()

        tasks = []
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if slots.locked():
                stalled += 1
            await slots.acquire()
            tasks.append(asyncio.create_task(one(i)))
        send_elapsed = time.perf_counter() - t0
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    return {
        "mode": "retrying",
        "n": n,
        "rate_offered": rate,
        "duration_s": duration,
        "accepted": len(acked),
        "answers": dict(answers),
        "refused": dict(refused),
        "stalled_ticks": stalled,
        "send_elapsed_s": round(send_elapsed, 4),
        "elapsed_s": round(elapsed, 4),
        "cpu_loop_s": round(time.process_time() - cpu0, 3),
        "acked": [[event_id, round(at, 6)] for event_id, at in acked],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("closed")
    c.add_argument("-n", type=int, required=True)
    c.add_argument("-c", "--conc", type=int, default=64)
    p = sub.add_parser("paced")
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--max-inflight", type=int, default=256)
    r = sub.add_parser("retrying")
    r.add_argument("--rate", type=float, default=500.0)
    r.add_argument("--duration", type=float, default=16.0)
    r.add_argument("--max-inflight", type=int, default=512)
    r.add_argument("--acks", required=True, help="file: each acknowledged id and when, a line")
    for each in (c, p, r):
        each.add_argument("--url", required=True)
        each.add_argument("--id-prefix", default="evt_bench_")
        each.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args()
    signer = Signer([os.environ["BENCH_INTAKE_SECRET"]])
    work: Coroutine[Any, Any, dict]
    if args.mode == "closed":
        work = closed(args.url, args.n, args.conc, args.id_prefix, signer)
    elif args.mode == "retrying":
        work = retrying(
            args.url,
            args.rate,
            args.duration,
            args.max_inflight,
            args.id_prefix,
            signer,
        )
    else:
        work = paced(args.url, args.rate, args.duration, args.max_inflight, args.id_prefix, signer)
    result = run_loop(bounded(work, args.max_seconds))
    if args.mode == "retrying":
        # A file, not the JSON line: a pipe cut that line at 96 KiB.
        with open(args.acks, "w") as out:
            out.writelines(f"{event_id} {at}\n" for event_id, at in result.pop("acked"))
    emit_result(result)


if __name__ == "__main__":
    main()
