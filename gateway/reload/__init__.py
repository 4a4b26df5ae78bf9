"""Conf hot reload: SIGHUP, ``tocsin reload`` and the admin API (docs/operations.md,
"Reloading the conf")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .bus import ProcessConf, publish_reload, read_processes
from .check import RESTART_ONLY, Checked, check_conf

if TYPE_CHECKING:
    from .swap import Reloader, ReloadResult, reload

__all__ = [
    "RESTART_ONLY",
    "Checked",
    "ProcessConf",
    "ReloadResult",
    "Reloader",
    "check_conf",
    "publish_reload",
    "read_processes",
    "reload",
]


def __getattr__(name: str) -> Any:
    # The swapping side needs the scenario engine, the metrics...: `tocsin check` and
    # `tocsin reload` import this package without loading them.
    if name in ("Reloader", "ReloadResult", "reload"):
        from . import swap  # noqa: PLC0415

        return getattr(swap, name)
    raise AttributeError(name)
