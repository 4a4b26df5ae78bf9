"""Every extension point of Tocsin, grouped by the phase that calls it.

pluggy is synchronous, so hooks only *register* things (classes, callables); the async
I/O lives in the registered classes (``async def send``), which the core awaits.
All hooks run once at start-up; ``gateway.plugins`` is the only caller. A name
registered by two plugins is a start-up error naming both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .markers import hookspec

if TYPE_CHECKING:
    from .channel import Channel
    from .conditions import Condition
    from .source import Source


# -- Intake: where events come from ------------------------------------------------


@hookspec
def tocsin_register_sources() -> Sequence[type[Source[Any]]]:  # type: ignore[empty-body]
    """Return event-source classes (subclasses of ``gateway.Source``).

    Each class's ``type_name`` is what ``[sources.NAME] type = "..."`` refers to; the
    source is mounted at ``POST /v1/sources/NAME``.
    """


# -- Routing: which events become which deliveries ---------------------------------


@hookspec
def tocsin_register_conditions() -> Sequence[Condition]:  # type: ignore[empty-body]
    """Return ``gateway.Condition`` operators usable in rules' ``when = [...]``.

    The operator text is the name (``">="``, ``"in"``, ``"matches"``).
    """


# -- Rendering: how content is written ---------------------------------------------


@hookspec
def tocsin_register_template_filters() -> dict[str, Callable[..., Any]]:  # type: ignore[empty-body]
    """Return Jinja2 filters by name, available in every template (sandboxed)."""


# -- Delivery: how messages leave -----------------------------------------------------


@hookspec
def tocsin_register_channels() -> Sequence[type[Channel[Any]]]:  # type: ignore[empty-body]
    """Return channel classes (subclasses of ``gateway.Channel``).

    Each class's ``type_name`` is what ``[channels.NAME] type = "..."`` refers to.
    """
