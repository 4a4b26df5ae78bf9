"""The embedded default: each message appended as one JSON line to a file, fsync'd.

No account, no network: the default conf shows real messages (text, encoding, segment
count) that anyone can read with ``tail -f var/outbox/sms.jsonl``. A line::

    {"at": "2026-11-25T10:15:02.120Z", "channel": "customer_sms", "delivery_id": "msg_...",
     "message_id": "msg_...", "to": "+33612345678", "from": "MaBoutique",
     "text": "...", "encoding": "GSM-7", "segments": 1}

Each line is written with one ``write`` on a file opened in append mode, then fsync'd
before ``send`` returns: a delivery recorded as delivered is on disk.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from gateway import TransientError

from .base import Accepted, OutgoingSms, Provider


class Outbox(Provider):
    name = "outbox"

    def __init__(self, path: Path, channel: str) -> None:
        self.path = path
        self.channel = channel
        self._encoder = msgspec.json.Encoder()

    def target(self) -> str:
        return f"outbox ({self.path})"

    def line(self, sms: OutgoingSms) -> bytes:
        at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        record = {
            "at": at,
            "channel": self.channel,
            "delivery_id": sms.delivery_id,
            # The id a receipt would name: the delivery id itself, here.
            "message_id": sms.delivery_id,
            "to": sms.to,
            "from": sms.sender,
            "text": sms.text,
            "encoding": sms.encoding,
            "segments": sms.segments,
        }
        return self._encoder.encode(record) + b"\n"

    async def send(self, sms: OutgoingSms) -> Accepted:
        # File I/O and fsync block: keep them off the event loop every channel shares.
        await asyncio.to_thread(self._append, self.line(sms))
        return Accepted(self.name, (sms.delivery_id,), "written")

    def _append(self, line: bytes) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                written = os.write(fd, line)
                if written != len(line):  # a full disk part-way through a line
                    raise OSError(28, "short write")
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:  # disk full, permissions being fixed...: worth another try
            raise TransientError(f"outbox: cannot append to {self.path}: {exc.strerror}") from None
