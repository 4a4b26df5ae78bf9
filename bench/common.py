"""Helpers shared by the bench processes: the event payload, percentiles, the event loop.

Every process of the benchmark (load generators, sink, ceilings) imports this module
only, plus ``gateway.signing`` for Standard Webhooks signatures: the same code Tocsin
signs and verifies with, so signing costs the same on both sides of a ratio.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

import msgspec

HOST = "127.0.0.1"
#: Size of one encoded event, as posted to the intake (the brief's "~1 KB").
EVENT_BYTES = 1024

_encoder = msgspec.json.Encoder()
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def make_event(event_id: str, ts: float, seq: int = 0) -> dict[str, Any]:
    """A canonical Tocsin event of ~1 KB carrying ``data.ts`` (epoch seconds, float).

    The sink's latency is its receipt time minus ``data.ts``; json_hook delivers the
    event as stored, so ``data.ts`` reaches the sink unchanged.
    """
    event: dict[str, Any] = {
        "id": event_id,
        "type": "payment.succeeded",
        "occurred_at": datetime.fromtimestamp(ts, UTC).isoformat(),
        "source": {
            "provider": "bench",
            "event_type": "charge.succeeded",
            "event_id": f"ch_{seq:010d}",
            "livemode": False,
        },
        "customer": {
            "id": "cus_000042",
            "name": "Ada Lovelace",
            "email": "ada@example.test",
            "phone": "+15550000000",
            "locale": "fr",
            "kind": "b2c",
        },
        "refs": {"invoice_ref": f"FA-2026-{seq:06d}", "order": f"ord_{seq:08d}"},
        "data": {"amount": 10_000 + seq % 90_000, "currency": "EUR", "ts": ts, "note": ""},
    }
    room = EVENT_BYTES - len(_encoder.encode(event))
    event["data"]["note"] = "x" * max(0, room)
    return event


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (``None`` when empty)."""
    if not sorted_values:
        return None
    k = round(q / 100 * (len(sorted_values) - 1))
    return sorted_values[min(len(sorted_values) - 1, max(0, k))]


def latency_summary_ms(seconds: list[float]) -> dict[str, float | None]:
    """p50/p90/p99/max in milliseconds of a list of durations in seconds."""
    values = sorted(seconds)
    out: dict[str, float | None] = {}
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)):
        v = percentile(values, q)
        out[name] = None if v is None else round(v * 1000, 3)
    return out


def run_loop(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run under uvloop (what ``tocsin serve`` uses), bounded by the coroutine itself."""
    import uvloop  # noqa: PLC0415

    return uvloop.run(coro)


def emit_result(result: dict[str, Any]) -> None:
    """A child's result: one JSON line on stdout, read by the orchestrator."""
    result.setdefault("cpu_s", round(time.process_time(), 3))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


async def bounded(coro: Coroutine[Any, Any, Any], seconds: float) -> Any:
    async with asyncio.timeout(seconds):
        return await coro


def box_busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine, all CPUs (from /proc/stat).

    The difference over a window, minus what the bench's own processes used, is the
    load something else put on the box meanwhile (another test run, say).
    """
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:7]) - idle  # user nice system (idle iowait) irq softirq; not steal
    return busy / _CLK_TCK
