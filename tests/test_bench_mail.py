"""The email bench runs end to end: every event becomes exactly one email at the sink,
from Tocsin (end to end and drain) and from the aiosmtplib ceiling, the same message.

No timing assertion: the figures depend on the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
N = 200


@pytest.mark.slow
def test_bench_mail_delivers_every_event_as_one_email(tmp_path: Path) -> None:
    out = tmp_path / "mail.json"
    argv = [sys.executable, "-m", "bench.mail", "-n", str(N), "--out", str(out)]
    run = subprocess.run(argv, check=False, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "emails/s" in run.stdout and "ratio Tocsin / ceiling" in run.stdout

    result = json.loads(out.read_text())
    for side in ("tocsin", "drain", "ceiling"):
        figures = result[side]
        assert figures["ok"], (side, figures)
        assert figures["sink"]["count"] == figures["sink"]["distinct"] == N, side
        assert figures["emails_per_s"] > 0 and figures["cpu_us_per_email"] > 0, side
    assert result["tocsin"]["accepted"] == N
    # The ceiling sends the very message Tocsin sends: same size at the sink, give or
    # take the Message-ID and the invoice number that differ per event.
    size = result["ceiling"]["message_bytes"]
    assert abs(result["tocsin"]["sink"]["avg_bytes"] - size) < 40
    assert abs(result["ceiling"]["sink"]["avg_bytes"] - size) < 40
    assert result["ratio"] is not None and result["cpu_ratio"] is not None
