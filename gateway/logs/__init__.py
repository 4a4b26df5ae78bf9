"""Logging for ``tocsin`` commands: human or JSON lines on stderr, personal data masked.

``setup`` installs one stderr handler on the root logger with ``MaskingFilter``, so
every line is masked, whoever logs it (the core, a plugin, a library), as long as it goes
through the standard ``logging`` module. See docs/operations.md, "Logs".
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType

from .context import current_known, sending
from .mask import Known, known_values, mask_email, mask_iban, mask_name, mask_text
from .records import CONTEXT_FIELDS, HUMAN_FORMAT, OURS, JsonFormatter, MaskingFilter

FORMATS = ("human", "json")
#: One line per accepted event, one per final delivery outcome: what ``--no-log-traffic``
#: quiets (to WARNING: dead letters still show).
TRAFFIC_LOGGERS = ("tocsin.events", "tocsin.deliveries")

__all__ = [
    "CONTEXT_FIELDS",
    "FORMATS",
    "HUMAN_FORMAT",
    "OURS",
    "TRAFFIC_LOGGERS",
    "JsonFormatter",
    "Known",
    "MaskingFilter",
    "current_known",
    "known_values",
    "mask_email",
    "mask_iban",
    "mask_name",
    "mask_text",
    "sending",
    "setup",
]


def setup(level: str, fmt: str = "human", traffic: bool = True) -> None:
    """Replace the root logger's handlers with one masked stderr handler in ``fmt``;
    ``traffic=False`` leaves out the per-event and per-delivery INFO lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(MaskingFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(HUMAN_FORMAT))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)
    # What no line shows, not computed for each (the logging HOWTO's "Optimization"): the
    # caller's file and line (a stack walk), thread and multiprocessing names, the task.
    # -4 us of the ~15 us a line costs. The pid stays: several processes share stderr.
    logging._srcfile = None
    logging.logThreads = logging.logMultiprocessing = False
    if hasattr(logging, "logAsyncioTasks"):  # Python 3.12+
        logging.logAsyncioTasks = False
    for name in TRAFFIC_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if traffic else logging.WARNING)
    # Warnings and a crash's traceback would otherwise reach stderr unmasked.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("tocsin").critical("uncaught exception", exc_info=(kind, exc, tb))
