"""The benchmark runs end to end: every event accepted and delivered exactly once.

A smoke run of ``python -m bench`` (N=500, 1 s latency phase) with the sink verifying
every signature. No timing assertion: the figures depend on the machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
N = 500


@pytest.mark.slow
def test_bench_quick_run_delivers_every_event_once(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    argv = [sys.executable, "-m", "bench", "--quick", "--events", str(N)]
    argv += ["--latency-seconds", "1", "--verify", "--out", str(out)]
    run = subprocess.run(argv, check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "intake" in run.stdout and "delivery" in run.stdout and "latency" in run.stdout

    result = json.loads(out.read_text())
    assert {"meta", "intake", "delivery", "latency", "checks", "targets", "peers", "runs"} <= set(
        result
    )
    assert result["meta"]["events"] == N
    assert result["meta"]["redis"]["appendfsync"] == "always"
    assert all(check["ok"] for check in result["checks"].values()), result["checks"]

    intake = result["intake"]
    assert intake["tocsin"]["statuses"] == {"202": N}
    assert intake["tocsin"]["unrouted"] == N
    assert intake["ceiling"]["accepted"] == N
    for key in ("ratio", "cpu_ratio"):
        assert key in intake
    for side in ("tocsin", "ceiling"):
        assert {"rate", "ack_ms", "server_cpu_us_per_event"} <= set(intake[side])
        assert {"p50", "p99"} <= set(intake[side]["ack_ms"])

    delivery = result["delivery"]
    sink = delivery["tocsin"]["sink"]
    assert sink["count"] == N
    assert sink["unique_webhook_ids"] == N
    assert sink["unique_event_ids"] == N
    assert sink["duplicate_webhook_ids"] == sink["duplicate_event_ids"] == 0
    assert sink["verifying"] and sink["bad_signature"] == 0
    assert delivery["tocsin"]["left_in_redis"] == {
        "events": 0,
        "deliveries": 0,
        "retries": 0,
        "dead": 0,
    }
    assert delivery["ceiling"]["sink"]["count"] == N
    assert {"rate", "ratio"} <= set(delivery["tocsin"]) | set(delivery)

    latency = result["latency"]
    accepted = latency["load"]["accepted"]
    assert accepted == latency["load"]["n"] > 0
    assert latency["sink"]["count"] == latency["sink"]["unique_webhook_ids"] == accepted
    assert latency["sink"]["bad_signature"] == 0
    assert {"p50", "p99"} <= set(latency["latency_ms"])

    assert set(result["targets"]) == {"intake_ratio", "delivery_ratio", "latency_p99_ms"}


@pytest.mark.slow
def test_bench_fault_phase_loses_nothing(tmp_path: Path) -> None:
    """``--faults-only``, short: the gateway SIGKILLed twice and redis-server once under
    a retrying paced load; every event acknowledged, none lost, Redis left empty."""
    out = tmp_path / "result.json"
    argv = [sys.executable, "-m", "bench", "--faults-only", "--fault-rate", "200"]
    argv += ["--fault-seconds", "6", "--verify", "--out", str(out)]
    run = subprocess.run(argv, check=False, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    faults = result["faults"]
    assert [what for what, _ in faults["timeline"]] == [
        "gateway SIGKILL",
        "gateway SIGKILL",
        "redis SIGKILL",
        "redis started",
    ]
    assert faults["acknowledged"] == faults["load"]["n"] == 1200
    assert faults["lost"] == 0 and faults["bad_signature"] == 0
    assert faults["load"]["answers"].get("503", 0) > 0, "Redis was never down for the producers"
    assert faults["left_in_redis"] == {"events": 0, "deliveries": 0, "retries": 0, "dead": 0}
    assert result["checks"]["faults_nothing_lost"]["ok"]
    assert faults["fault_free"]["delivered"] == faults["backlog_at_last_fault"]
    assert set(result["targets"]) == {"fault_drain_ratio"}


@pytest.mark.slow
def test_bench_full_pipeline_delivers_every_acknowledged_event_once(tmp_path: Path) -> None:
    """``--pipeline-only``, short: the default ``tocsin serve`` (``--processes auto``) and
    the bare reference, each saturated then paced, every signature verified by the sink;
    wrk when installed, else the Python generator, and the output says which."""
    out = tmp_path / "result.json"
    argv = [sys.executable, "-m", "bench", "--pipeline-only", "--events", str(N)]
    argv += ["--pipeline-processes", "auto", "--rate", "500", "--latency-seconds", "1"]
    argv += ["--verify", "--out", str(out)]
    run = subprocess.run(argv, check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    pipeline = json.loads(out.read_text())["pipeline"]
    generator = pipeline["load_generator"]["saturating"]
    assert generator.startswith("wrk") == (shutil.which("wrk") is not None), generator
    assert f"saturating load: {generator}" in run.stdout
    assert [(r["side"], r["load"]) for r in pipeline["runs"]] == [
        ("reference", "saturating"),
        ("tocsin -p auto", "saturating"),
        ("reference", "paced"),
        ("tocsin -p auto", "paced"),
    ]
    for r in pipeline["runs"]:
        sink = r["sink"]
        assert r["accepted"] >= (N if r["load"] == "saturating" else 500), r
        assert r["accepted"] <= r["delivered"] <= r["sent"]["sent_at_most"], r
        assert sink["count"] == sink["unique_webhook_ids"] == r["delivered"]
        assert sink["verifying"] and sink["bad_signature"] == 0
        assert not any(r["left_in_redis"].values()), r["left_in_redis"]
    result = json.loads(out.read_text())
    assert all(check["ok"] for check in result["checks"].values()), result["checks"]
    assert {"pipeline_ratio", "pipeline_vs_saq", "pipeline_p99_ms"} == set(result["targets"])
