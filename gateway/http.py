"""How HTTP answers map to delivery outcomes, for every HTTP-based channel.

2xx delivered; 3xx failed for good (redirects are never followed); 408, 425, 429 and
5xx retried, honouring ``Retry-After``; 410 Gone disables the endpoint; other 4xx
failed for good.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from .errors import EndpointGone, PermanentError, TransientError

RETRYABLE_4XX = frozenset({408, 425, 429})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def raise_for_outcome(status: int, headers: Mapping[str, str], excerpt: str = "") -> None:
    """Return on 2xx; otherwise raise the error that says what happens next."""
    if 200 <= status < 300:
        return
    detail = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
    if 300 <= status < 400:
        location = headers.get("Location", "")
        raise PermanentError(
            f"{detail} (redirects are not followed{'; Location: ' + location if location else ''})",
            status=status,
        )
    if status in RETRYABLE_4XX or status >= 500:
        raise TransientError(
            detail, status=status, retry_after=parse_retry_after(headers.get("Retry-After"))
        )
    if status == 410:
        raise EndpointGone(detail + " (endpoint gone: channel disabled)", status=status)
    raise PermanentError(detail, status=status)
