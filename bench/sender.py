"""Delivery ceiling: a bare aiohttp client posting N signed webhooks to the sink.

One ``ClientSession`` (connection limit C), C workers, each POST signed like Standard
Webhooks (HMAC-SHA256 over ``id.timestamp.body``, with ``gateway.signing.Signer``: the
json_hook channel's own signer). The bodies are the same ~1 KB canonical events the
gateway delivers, encoded before the timed loop (the gateway reads them ready-made from
Redis); signing happens per request, as in the gateway.

Prints one JSON line with ``t_start`` (wall clock just before the first POST): the
orchestrator divides N by (sink's last receipt - t_start), the same measure it applies
to Tocsin's delivery phase. The secret is read from ``BENCH_HOOK_SECRET``.

    python -m bench.sender --url http://127.0.0.1:8081/hook -n 20000 -c 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import aiohttp

from gateway.signing import Signer

from .common import bounded, box_busy_seconds, emit_result, encode, make_event, run_loop


async def send(url: str, n: int, conc: int, signer: Signer) -> dict:
    now = time.time()
    bodies = [encode(make_event(f"evt_ceiling_{i:08d}", now, i)) for i in range(n)]
    ok = failed = 0
    next_index = 0
    connector = aiohttp.TCPConnector(limit=conc)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal next_index, ok, failed
            while next_index < n:
                i = next_index
                next_index += 1
                body = bodies[i]
                headers = signer.headers(f"msg_ceiling_{i:08d}", body)
                headers["Content-Type"] = "application/json"
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        if 200 <= response.status < 300:
                            ok += 1
                        else:
                            failed += 1
                except aiohttp.ClientError:
                    failed += 1

        cpu0, box0 = time.process_time(), box_busy_seconds()
        t_start = time.time()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        elapsed = time.perf_counter() - t0
        cpu_loop = time.process_time() - cpu0
        box_busy = box_busy_seconds() - box0
    return {
        "n": n,
        "concurrency": conc,
        "ok": ok,
        "failed": failed,
        "t_start": t_start,
        "elapsed_s": round(elapsed, 4),
        "rate": round(n / elapsed, 1),
        "cpu_loop_s": round(cpu_loop, 3),
        "box_busy_s": round(box_busy, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("-n", type=int, required=True)
    parser.add_argument("-c", "--conc", type=int, default=64)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args()
    signer = Signer([os.environ["BENCH_HOOK_SECRET"]])
    result = run_loop(bounded(send(args.url, args.n, args.conc, signer), args.max_seconds))
    emit_result(result)


if __name__ == "__main__":
    main()
