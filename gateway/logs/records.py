"""The masking filter and the two line formats (human, json)."""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

from .context import current_scope
from .mask import NOTHING_KNOWN, mask_name, mask_text

#: ``%(asctime)s`` first: bench/run.py reads the time of the ready line from it.
HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Fields a line carries, when known, before any other ``extra``.
CONTEXT_FIELDS = ("event_id", "delivery_id", "channel", "attempt")
#: ``extra`` fields whose value is a person's name: masked whole, whatever it looks like.
NAME_FIELDS = frozenset({"customer_name", "recipient_name", "person"})

# Every attribute a LogRecord has without ``extra`` (plus what formatters add to it).
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "_masked",
}
_STANDARD_COUNT = len(logging.LogRecord("", 0, "", 0, "", None, None).__dict__)
_PLAIN = (str, int, float, bool, type(None))

#: ``extra=OURS``: a line the gateway composed from its own ids and names only (no text
#: from a receiver or a plugin), so its delivery's customer cannot be in it. Such lines
#: skip the known-customer pass and their ``extra`` fields are not scanned (the hot
#: path's INFO lines); their message is still masked for shapes.
OURS = {"_ours": True}
_traceback = logging.Formatter()


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and k[:1] != "_"}


class MaskingFilter(logging.Filter):
    """Masks personal data in a record's final message, its traceback and its ``extra``
    fields, and adds the ids of the delivery being sent (``context``).

    On the handler, not a logger: a handler's filters see every record that reaches it,
    third-party loggers' included; a logger's filters miss records propagated from below.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_masked", False):  # several handlers: masked once
            return True
        record._masked = True
        ours = getattr(record, "_ours", False)
        scope = current_scope()
        known = NOTHING_KNOWN
        if scope is not None:
            if not ours:
                known = scope.known()
            for key, value in scope.fields().items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        try:
            message = record.getMessage()
        except Exception as exc:  # a bad format string must not lose the line
            message = f"{record.msg!s} (log arguments did not format: {exc!r}: {record.args!r})"
        record.msg, record.args = mask_text(message, known), None
        if record.exc_info and not record.exc_text:
            record.exc_text = _traceback.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text, known)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info, known)
        if ours or len(record.__dict__) <= _STANDARD_COUNT + 1:  # + _masked
            return True  # no extra, or the gateway's own ids (scope's, OURS lines')
        for key, value in extra_fields(record).items():
            if key in NAME_FIELDS and isinstance(value, str):
                setattr(record, key, mask_name(value))
            elif isinstance(value, str):
                setattr(record, key, mask_text(value, known))
            elif not isinstance(value, _PLAIN):
                setattr(record, key, mask_text(str(value), known))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339, UTC), level, logger, message, pid, the
    delivery's ids when known, any other ``extra`` field, and the traceback if any."""

    def __init__(self) -> None:
        super().__init__()
        self._encode = msgspec.json.Encoder(enc_hook=str).encode

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        fields = extra_fields(record)
        for key in CONTEXT_FIELDS:
            if key in fields:
                out[key] = fields.pop(key)
        out.update(fields)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return self._encode(out).decode()


def _rfc3339(created: float) -> str:
    millis = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{millis:03d}Z"
