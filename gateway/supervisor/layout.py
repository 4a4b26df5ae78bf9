"""Which roles each child runs."""

from __future__ import annotations

from collections.abc import Sequence

#: ``all``: every child runs every role asked for. ``split``: one child takes the intake,
#: the others route and deliver. Chosen by measurement: docs/deployment.md.
SPREADS = ("all", "split")


def layout(count: int, roles: Sequence[str], spread: str = "all") -> list[tuple[str, ...]]:
    """The roles of each of ``count`` children."""
    if spread not in SPREADS:
        raise ValueError(f"spread {spread!r}: one of {', '.join(SPREADS)}")
    roles = tuple(roles)
    rest = tuple(r for r in roles if r != "intake")
    if spread == "all" or count < 2 or "intake" not in roles or not rest:
        return [roles] * count
    return [("intake",), *([rest] * (count - 1))]
