"""How the core treats one channel's endpoint: retries, limits, breaker, auto-disable.

Written in conf as ``[channels.NAME.delivery]`` (the rest of ``[channels.NAME]`` belongs
to the channel's plugin). ``ChannelGate`` enforces the in-process part: jobs are read
from a channel's stream only when the gate has room, so a throttled job waits in the
stream, not half-read in a worker where another worker might take it over.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

import msgspec

from .durations import Duration
from .retry import DEFAULT_SCHEDULE, JITTER


class ChannelPolicy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Delay before attempt 1, 2, 3...; the first is normally ``0s``. Its length is the
    #: number of attempts before the dead letters.
    retry_schedule: Annotated[list[Duration], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: [Duration(s) for s in DEFAULT_SCHEDULE]
    )
    #: Each delay varies by up to this fraction either way, so retries do not stampede.
    jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] = JITTER
    #: Sends in flight at once to this endpoint, per gateway process.
    max_in_flight: Annotated[int, msgspec.Meta(ge=1)] = 128
    #: Sends per second to this endpoint, per gateway process; 0: unlimited.
    rate_limit: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    #: After this many failures in a row, stop sending for ``breaker_cooldown``, then probe
    #: with one send; 0 disables the breaker.
    breaker_failures: Annotated[int, msgspec.Meta(ge=0)] = 5
    breaker_cooldown: Duration = Duration(30)
    #: An endpoint failing without a single success for this long is disabled (staff told
    #: through an ``endpoint.disabled`` event); 0 never disables.
    disable_after: Duration = Duration(5 * 86400)
    #: A sending window (``[windows.NAME]``; ``courtesy`` is built in) for messages on
    #: this channel: outside it they are deferred. A rule's ``window`` overrides it.
    window: str | None = None


class ChannelGate:
    """Concurrency limit, token-bucket rate limit and circuit breaker for one endpoint."""

    def __init__(self, policy: ChannelPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self.in_flight = 0
        self.failures = 0
        #: Breaker open until this time; then one probe is let through (half-open).
        self.open_until = 0.0
        self.probing = False
        self._tokens = self._burst
        self._refilled = clock()

    @property
    def _burst(self) -> float:
        return max(1.0, self.policy.rate_limit)

    @property
    def breaker_open(self) -> bool:
        return self.open_until > 0

    def available(self) -> int:
        """How many jobs may start now."""
        free = self.policy.max_in_flight - self.in_flight
        if self.open_until:
            if self.clock() < self.open_until or self.probing:
                return 0
            free = min(free, 1)  # half-open: one probe
        if self.policy.rate_limit:
            now = self.clock()
            self._tokens = min(
                self._burst, self._tokens + (now - self._refilled) * self.policy.rate_limit
            )
            self._refilled = now
            free = min(free, int(self._tokens))
        return max(0, free)

    def wait_hint(self) -> float:
        """Seconds until ``available`` may turn positive without a send finishing."""
        if self.open_until and not self.probing:
            return max(0.0, self.open_until - self.clock())
        if self.policy.rate_limit:
            return max(0.0, (1 - self._tokens) / self.policy.rate_limit)
        return 1.0

    def started(self, count: int) -> None:
        self.in_flight += count
        if self.policy.rate_limit:
            self._tokens -= count
        if self.open_until and self.clock() >= self.open_until:
            self.probing = True

    def finished(self, endpoint_failed: bool | None) -> None:
        """``None``: the outcome says nothing about the endpoint (a template failed...)."""
        self.in_flight -= 1
        if endpoint_failed is None:
            if self.probing:
                self.probing = False  # the probe proved nothing: probe again
            return
        if not endpoint_failed:
            self.failures = 0
            self.open_until = 0.0
            self.probing = False
            return
        self.failures += 1
        limit = self.policy.breaker_failures
        if limit and (self.failures >= limit or self.probing):
            self.open_until = self.clock() + float(self.policy.breaker_cooldown)
            self.probing = False
