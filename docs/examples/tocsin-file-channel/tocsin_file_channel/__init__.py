"""file_log: append one JSON line per delivery to a file (an audit trail, a demo sink).

Conf::

    [channels.audit]
    type = "file_log"
    path = "/var/log/tocsin/audit.jsonl"   # relative paths are under [gateway] data_dir

A line: ``{"delivery_id": ..., "event_id": ..., "type": ..., "recipient": ...}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec

from gateway import (
    Action,
    Channel,
    ChannelContext,
    Delivery,
    PermanentError,
    TransientError,
    hookimpl,
)


class FileLogConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: The file to append to. Its folder must exist: the channel never creates it.
    path: str


class FileLog(Channel[FileLogConfig]):
    type_name = "file_log"
    config_type = FileLogConfig

    def __init__(self, name: str, config: FileLogConfig, context: ChannelContext) -> None:
        super().__init__(name, config, context)
        if not config.path:
            # A ValueError here is reported by `tocsin check` as `file:LINE: channels.NAME: ...`.
            raise ValueError("path: must not be empty")
        self.path = context.data_dir / config.path  # an absolute path stays as it is
        self._encoder = msgspec.json.Encoder()

    @property
    def send_timeout(self) -> float:
        return 5.0  # appending one line is fast; anything slower is a stuck disk

    def check_action(self, action: Action) -> list[str]:
        if action.template is not None:
            return ["template: file_log writes no template; remove it"]
        return []

    async def send(self, delivery: Delivery) -> None:
        line = self._encoder.encode(
            {
                "delivery_id": delivery.id,
                "event_id": delivery.event_id,
                "type": delivery.event_type,
                "recipient": msgspec.to_builtins(delivery.recipient),
            }
        )
        # File I/O blocks: keep it off the event loop that serves every other channel.
        await asyncio.to_thread(self._append, line + b"\n")

    def _append(self, line: bytes) -> None:
        if not self.path.parent.is_dir():
            # Retrying cannot create the folder: fail for good, with a reason ops can act on.
            raise PermanentError(f"folder {self.path.parent} does not exist")
        try:
            with self.path.open("ab") as fh:
                fh.write(line)
        except OSError as exc:  # disk full, permissions being fixed...: worth another try
            raise TransientError(f"cannot append to {self.path}: {exc.strerror}") from None


@hookimpl
def tocsin_register_channels() -> Sequence[type[Channel[Any]]]:
    return [FileLog]


__all__ = ["FileLog", "FileLogConfig"]
