"""Ratios, correctness checks, targets, the printed table and the JSON result."""

from __future__ import annotations

import json
from typing import Any

from . import faults

INTAKE_RATIO_TARGET = 0.8
DELIVERY_RATIO_TARGET = 0.8
LATENCY_P99_TARGET_MS = 25.0
#: After the last fault, the backlog drains within this many times a fault-free drain.
FAULT_DRAIN_TARGET = 2.0

#: Context only: from a separate peers run (another run, same 2-core box; each peer
#: enqueues N jobs into Redis and a worker POSTs them to the same kind of sink). Its
#: results file is not in this repository: named, not located on one machine.
PEERS = {
    "source": "bench-peers/results.md, 2026-11-25",
    "deliveries_per_s": {
        "Celery (prefork c2, best config)": "~0.9k/s",
        "arq (tuned: max_jobs 64, poll 50 ms)": "<=1.5k/s",
        "saq (c10/c64)": "~1.7k/s",
        "Apprise json:// (sequential)": "<=1k/s",
    },
    "ceilings_there": {
        "aiohttp sender c64 + HMAC -> sink": "12-17k/s",
        "bare intake, group-commit XADD, AOF everysec, wrk": "~22.8k req/s",
    },
}


def ratio(tocsin: dict[str, Any], ceiling: dict[str, Any], key: str) -> dict[str, Any]:
    a, b = tocsin.get(key), ceiling.get(key)
    value = round(a / b, 3) if a and b else None
    # CPU per event of the working process: what the ratio would be on idle, equal cores.
    ta, cb = tocsin.get("server_cpu_us_per_event"), ceiling.get("server_cpu_us_per_event")
    cpu_ratio = round(cb / ta, 3) if ta and cb else None
    return {"ratio": value, "cpu_ratio": cpu_ratio}


def _check(ok: bool, detail: str) -> dict[str, Any]:
    return {"ok": bool(ok), "detail": detail}


def _exactly_once(sink: dict[str, Any], expected: int) -> tuple[bool, str]:
    ok = (
        sink["count"] == expected
        and sink["unique_webhook_ids"] == expected
        and sink["unique_event_ids"] == expected
        and sink["duplicate_webhook_ids"] == 0
        and sink["duplicate_event_ids"] == 0
        and sink["bad_signature"] == 0
    )
    detail = (
        f"sink {sink['count']}/{expected}, unique webhook-ids {sink['unique_webhook_ids']}, "
        f"unique event ids {sink['unique_event_ids']}, duplicates "
        f"{sink['duplicate_webhook_ids']}/{sink['duplicate_event_ids']}, "
        f"bad signatures {sink['bad_signature']}"
    )
    return ok, detail


def checks(result: dict[str, Any], n: int) -> dict[str, dict[str, Any]]:
    """Correctness of every repetition; the name gets a ``[rep]`` suffix when there are several."""
    out: dict[str, dict[str, Any]] = {}
    runs = result.get("runs", [])
    for rep, run in enumerate(runs):
        suffix = f"[{rep}]" if len(runs) > 1 else ""
        for name, check in _run_checks(run, n).items():
            out[name + suffix] = check
    lat = result.get("latency")
    if lat is not None:
        accepted, offered = lat["load"]["accepted"], lat["load"]["n"]
        ok, detail = _exactly_once(lat["sink"], accepted)
        out["latency_exactly_once"] = _check(
            ok and accepted == offered, f"{accepted}/{offered} got 202; {detail}"
        )
    faults = result.get("faults")
    if faults is not None:
        load, left = faults["load"], faults["left_in_redis"]
        out["faults_nothing_lost"] = _check(
            faults["lost"] == 0
            and faults["acknowledged"] == load["n"]
            and faults["bad_signature"] == 0
            and not any(left.values()),
            f"{faults['acknowledged']}/{load['n']} acknowledged (after retries), "
            f"{faults['lost']} lost {faults['lost_sample']}, left in Redis {left}",
        )
    return out


def _run_checks(run: dict[str, Any], n: int) -> dict[str, dict[str, Any]]:
    out = {}
    t = run["intake"]["tocsin"]
    out["intake_all_202"] = _check(
        t["accepted"] == n and t["statuses"] == {"202": n} and t["unrouted"] == n,
        f"{t['accepted']}/{n} got 202 {t['statuses']}, {t['unrouted']} waiting to be routed",
    )
    c = run["intake"]["ceiling"]
    out["ceiling_intake_all_202"] = _check(
        c["accepted"] == n and c["stream_length"] == n, f"{c['accepted']}/{n} got 202"
    )
    d = run["delivery"]["tocsin"]
    ok, detail = _exactly_once(d["sink"], n)
    left = d["left_in_redis"]
    out["delivery_exactly_once"] = _check(
        ok and not any(left.values()), f"{detail}; left in Redis {left}"
    )
    s = run["delivery"]["ceiling"]
    out["ceiling_delivery_complete"] = _check(
        s["sender"]["ok"] == n and s["sink"]["count"] == n,
        f"sender ok {s['sender']['ok']}/{n}, sink {s['sink']['count']}",
    )
    return out


def _target(value: float | None, target: float, higher_is_better: bool) -> dict[str, Any]:
    met = value is not None and (value >= target if higher_is_better else value <= target)
    return {
        "value": value,
        "target": f"{'>=' if higher_is_better else '<='} {target:g}",
        "met": met,
    }


def targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    if "intake" in result:
        out["intake_ratio"] = _target(result["intake"]["ratio"], INTAKE_RATIO_TARGET, True)
    if "delivery" in result:
        out["delivery_ratio"] = _target(result["delivery"]["ratio"], DELIVERY_RATIO_TARGET, True)
    if "latency" in result:
        p99 = result["latency"]["latency_ms"]["p99"]
        out["latency_p99_ms"] = _target(p99, LATENCY_P99_TARGET_MS, False)
    if "faults" in result:
        ratio = result["faults"]["drain_ratio"]
        out["fault_drain_ratio"] = _target(ratio, FAULT_DRAIN_TARGET, False)
    return out


def _n(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ms(lat: dict[str, Any]) -> str:
    return f"{_n(lat.get('p50'), 2)} / {_n(lat.get('p99'), 2)}"


def _cpu(record: dict[str, Any], seconds: float | None) -> str:
    if not seconds:
        return "-"
    parts = [f"{k} {v / seconds:.2f}" for k, v in record["cpu_s"].items() if v is not None]
    text = ", ".join(parts)
    others = record.get("box", {}).get("others_cores")
    return text if others is None else f"{text} | not ours {others:.2f}"


#: Above this many cores used by other processes during a measurement, the table says so.
BUSY_BOX_CORES = 0.15


def _rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    meta, tg = result["meta"], result["targets"]

    def verdict(key: str) -> str:
        return "met" if tg[key]["met"] else "MISSED"

    rows: list[tuple[str, ...]] = [("phase", "measure", "Tocsin", "ceiling", "ratio", "target", "")]
    if "intake" in result:
        intake = result["intake"]
        ti, ci = intake["tocsin"], intake["ceiling"]
        rows += [
            (
                "intake",
                f"events/s, all 202 (C={meta['concurrency']})",
                _n(ti["rate"]),
                _n(ci["rate"]),
                _n(intake["ratio"], 2),
                tg["intake_ratio"]["target"],
                verdict("intake_ratio"),
            ),
            ("", "ack p50 / p99 ms", _ms(ti["ack_ms"]), _ms(ci["ack_ms"]), "", "", ""),
            (
                "",
                "server CPU us/event (ceiling/Tocsin)",
                _n(ti["server_cpu_us_per_event"]),
                _n(ci["server_cpu_us_per_event"]),
                _n(intake["cpu_ratio"], 2),
                "",
                "",
            ),
        ]
    if "delivery" in result:
        delivery = result["delivery"]
        td, cd = delivery["tocsin"], delivery["ceiling"]
        rows += [
            (
                "delivery",
                "webhooks/s (ready -> sink has N)"
                + (f", {td['processes']} procs" if td.get("processes", 1) > 1 else ""),
                _n(td["rate"]),
                _n(cd["rate"]),
                _n(delivery["ratio"], 2),
                tg["delivery_ratio"]["target"],
                verdict("delivery_ratio"),
            ),
            (
                "",
                "sender CPU us/webhook (ceiling/Tocsin)",
                _n(td["server_cpu_us_per_event"]),
                _n(cd["server_cpu_us_per_event"]),
                _n(delivery["cpu_ratio"], 2),
                "",
                "",
            ),
            ("", "incl. process start (launch -> N)", _n(td["rate_incl_startup"]), "", "", "", ""),
        ]
    if "latency" in result:
        latency = result["latency"]
        rows += [
            (
                "latency",
                "intake->receipt p50 / p99 ms",
                _ms(latency["latency_ms"]),
                "",
                "",
                "p99 " + tg["latency_p99_ms"]["target"],
                verdict("latency_p99_ms"),
            ),
            (
                "",
                f"@ {latency['rate']:g}/s x {latency['seconds']:g}s: ack p50 / p99 ms",
                _ms(latency["load"]["ack_ms"]),
                "",
                "",
                "",
                "",
            ),
            (
                "",
                "gateway CPU us/event (all roles)",
                _n(latency["server_cpu_us_per_event"]),
                "",
                "",
                "",
                "",
            ),
        ]
    if "faults" in result:
        f = result["faults"]
        free = f["fault_free"] or {}
        rows += [
            (
                "faults",
                f"drain s after last fault, backlog {f['backlog_at_last_fault']:,} (fault-free)",
                _n(f["drain_s"], 2),
                _n(free.get("drain_s"), 2),
                _n(f["drain_ratio"], 2),
                tg["fault_drain_ratio"]["target"],
                verdict("fault_drain_ratio"),
            ),
            (
                "",
                f"@ {f['rate']:g}/s x {f['seconds']:g}s, gateway SIGKILL x{len(faults.KILLS)}, "
                "redis x1: lost / sent twice",
                f"{f['lost']} / {f['sent_twice']}",
                "",
                "",
                "",
                "",
            ),
        ]
    return rows


def _measurements(result: dict[str, Any]) -> list[tuple[str, dict[str, Any], float | None]]:
    out = []
    if "intake" in result:
        ti, ci = result["intake"]["tocsin"], result["intake"]["ceiling"]
        out += [
            ("intake    Tocsin ", ti, ti["elapsed_s"]),
            ("          ceiling", ci, ci["elapsed_s"]),
        ]
    if "delivery" in result:
        td, cd = result["delivery"]["tocsin"], result["delivery"]["ceiling"]
        out += [
            ("delivery  Tocsin ", td, td["elapsed_s"]),
            ("          ceiling", cd, cd["elapsed_s"]),
        ]
    if "latency" in result:
        lat = result["latency"]
        out.append(("latency   Tocsin ", lat, lat["load"].get("elapsed_s")))
    return out


def table(result: dict[str, Any]) -> str:
    meta = result["meta"]
    rows = _rows(result)
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    redis = meta["redis"]
    lines = [
        f"Tocsin benchmark  N={meta['events']:,} events of ~{meta['event_bytes']} B; "
        f"{meta['cpus']} CPUs shared by load generator, gateway, redis-server "
        f"{redis.get('redis_version', '?')} (appendfsync {redis.get('appendfsync', '?')}) "
        f"and sink; 127.0.0.1 only; hiredis {'on' if meta['versions'].get('hiredis') else 'off'}; "
        "AOF rewritten before each measurement",
        "",
    ]
    for i, row in enumerate(rows):
        cells = [
            str(c).ljust(widths[j]) if j < 2 else str(c).rjust(widths[j]) for j, c in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += ["", "CPU cores used while measuring (not ours = other load on the box meanwhile):"]
    busy = []
    for label, record, seconds in _measurements(result):
        lines.append(f"  {label} {_cpu(record, seconds)}")
        if record.get("box", {}).get("others_cores", 0) > BUSY_BOX_CORES:
            busy.append(label.strip() or "ceiling")
    if busy:
        lines.append(
            f"  WARNING: other processes used > {BUSY_BOX_CORES} core during some measurements; "
            "throughput and latency figures are depressed; rerun on a quiet box "
            "(CPU us/event rows are the least affected)"
        )
    for phase in ("intake", "delivery"):
        ratios = result.get(phase, {}).get("ratios", [])
        if len(ratios) > 1:
            lines.append(f"{phase}: {len(ratios)} repetitions, ratios {ratios} (table: the median)")
    lines += ["", "checks:"]
    for name, check in result["checks"].items():
        lines.append(f"  [{'ok' if check['ok'] else 'FAIL'}] {name}: {check['detail']}")
    lines += [
        "",
        f"peers, for context only ({PEERS['source']}, another run on this box):",
        "  delivered/s: " + ", ".join(f"{k} {v}" for k, v in PEERS["deliveries_per_s"].items()),
        "  their ceilings: " + ", ".join(f"{k} {v}" for k, v in PEERS["ceilings_there"].items()),
    ]
    return "\n".join(lines)


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2) + "\n"
