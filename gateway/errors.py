"""Exceptions that cross the boundary between the core and plugins.

A channel's ``send`` ends in one of three ways: it returns (delivered), raises
``TransientError`` (try again later) or raises ``PermanentError`` (failed for good).
Booleans are never used for that: an exception carries the reason to the history.
"""

from __future__ import annotations

from typing import Any


class TocsinError(Exception):
    """Base class; its message is always safe to show to an operator."""


class DeliveryError(TocsinError):
    """A send did not succeed. ``reason`` is recorded in the delivery's history.

    ``notify`` names an internal event type (e.g. ``erp.sync_failed``) that the core
    emits when the delivery ends in the dead letters (at once for a ``PermanentError``,
    after the last retry for a ``TransientError``), so rules can tell staff; ``details``
    go into its ``data`` next to the delivery, channel, rule, event and reason.
    """

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        notify: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.notify = notify
        self.details = details or {}


class TransientError(DeliveryError):
    """The receiver may accept the same delivery later (timeouts, 5xx, 429...).

    ``retry_after`` (seconds) asks for a delay, e.g. from an HTTP ``Retry-After``.
    """

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        notify: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(reason, status=status, notify=notify, details=details)
        self.retry_after = retry_after


class PermanentError(DeliveryError):
    """Sending the same delivery again cannot succeed (bad template, 4xx, invalid address).

    ``suppress`` names a suppression reason (``hard_bounce``, ``invalid_number``,
    ``stop_reply``...) when the provider's answer proves the recipient's address unusable
    or opted out: the core adds the address to the suppression list (gateway.suppression).
    """

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        notify: str | None = None,
        details: dict[str, Any] | None = None,
        suppress: str | None = None,
    ) -> None:
        super().__init__(reason, status=status, notify=notify, details=details)
        self.suppress = suppress


class EndpointGone(PermanentError):
    """The endpoint says it is gone for good (HTTP 410): this delivery fails and the
    channel is disabled until ``tocsin endpoints enable NAME``; its queue waits meanwhile."""


class ConfError(TocsinError):
    """The conf is invalid; ``problems`` lists every error found, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class PluginError(TocsinError):
    """Plugins conflict or cannot be loaded (e.g. two plugins register the same name)."""


class LayoutError(TocsinError):
    """The conf's key layout (``[redis] shards``) is not the one the data was written with."""
