"""When to try a failed delivery again (Standard Webhooks / Svix schedule by default)."""

from __future__ import annotations

import random
from collections.abc import Sequence

#: Delay before attempt 2, 3, ...: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h
#: (8 attempts over about 27 h 35 min), each with +/-20 % jitter.
DEFAULT_SCHEDULE: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
JITTER = 0.2
#: A receiver's Retry-After is honoured within these bounds.
RETRY_AFTER_BOUNDS = (1.0, 3600.0)


def next_delay(
    schedule: Sequence[float],
    attempt: int,
    retry_after: float | None = None,
    rand: random.Random | None = None,
    jitter: float = JITTER,
) -> float | None:
    """Seconds to wait after failed ``attempt`` (1-based), or ``None`` when attempts ran out."""
    if attempt >= len(schedule):
        return None
    base = schedule[attempt]
    if retry_after is not None:
        low, high = RETRY_AFTER_BOUNDS
        return max(base, min(high, max(low, retry_after)))
    r = rand or random
    return max(0.0, base * (1 + r.uniform(-jitter, jitter)))
