"""What delivery history keeps of a recipient and of what was sent.

A record keeps the recipient masked (``j***@example.com``, ``+336******78``) and, when
``[privacy] key`` is set, an HMAC-SHA256 of its normalised form: support finds a
customer's deliveries from the full address (``tocsin deliveries --to``) though no
record holds it. Without the key the hash would be a plain digest of a guessable value
(emails and phone numbers can be enumerated), so none is stored.

It also keeps ``vars``: the event's references and its non-personal data (amounts,
currencies, dates, ids: ``redact.keeps``), what an audit of "what did we send" needs
beside the template name and version.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import msgspec

from .redact import accounting_view


def normalise(address: str) -> str:
    """The form hashed: emails lower-cased, phone numbers without spaces or dots."""
    text = address.strip()
    if "@" in text:
        return text.lower()
    return "".join(ch for ch in text if ch.isdigit() or ch == "+")


def recipient_hash(key: bytes, address: str) -> str:
    """Keyed hash of an address: 32 hex digits (128 bits) of HMAC-SHA256."""
    return hmac.new(key, normalise(address).encode(), hashlib.sha256).hexdigest()[:32]


def mask(address: str) -> str:
    """``jeanne.dupont@example.com`` -> ``j***@e***.com``; ``+33612345678`` ->
    ``+336******78``; anything else keeps its first and last character."""
    text = address.strip()
    if "@" in text:
        local, _, domain = text.rpartition("@")
        host, dot, tld = domain.rpartition(".")
        shown_domain = f"{host[:1]}***{dot}{tld}" if dot else f"{domain[:1]}***"
        return f"{local[:1]}***@{shown_domain}"
    digits = sum(ch.isdigit() for ch in text)
    if digits >= 6:
        return text[:4] + "*" * max(1, len(text) - 6) + text[-2:]
    return text[:1] + "***" if len(text) > 1 else "***"


class _Head(msgspec.Struct):
    """The parts of an event a record takes: one partial decode on the settle path."""

    customer: dict[str, Any] | None = None
    refs: dict[str, Any] = msgspec.field(default_factory=dict)
    data: dict[str, Any] = msgspec.field(default_factory=dict)


_head = msgspec.json.Decoder(_Head)


@dataclass(frozen=True)
class Audited:
    customer: str | None
    vars: dict[str, Any]


def audited(event: bytes) -> Audited:
    """The customer id and the audit variables of an encoded event."""
    try:
        head = _head.decode(event)
    except msgspec.DecodeError:
        return Audited(None, {})
    customer = head.customer.get("id") if head.customer else None
    found: dict[str, Any] = {}
    if head.refs:
        found["refs"] = dict(head.refs)
    data = accounting_view(head.data, ())
    if data:
        found["data"] = data
    return Audited(customer if isinstance(customer, str) else None, found)


@lru_cache(maxsize=1024)
def template_version(root: Path, notification: str) -> str | None:
    """A digest of every file of a notification (all locales, all parts): the version a
    record names. Computed once per process (templates are not reloaded while running)."""
    folder = root / notification
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.j2")):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        try:
            digest.update(path.read_bytes())
        except OSError:
            continue
        digest.update(b"\0")
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class RecordPrivacy:
    """How records are written: the hash key (``None``: no hash) and where a channel's
    templates are (for the version)."""

    key: bytes | None = None
    templates: Callable[[str], Path | None] | None = None

    def hash(self, address: str) -> str | None:
        return recipient_hash(self.key, address) if self.key else None

    def version(self, channel: str, template: str | None) -> str | None:
        if template is None or self.templates is None:
            return None
        root = self.templates(channel)
        return template_version(root, template) if root is not None else None


#: Masking without a hash: what records get when nothing else is configured.
MASK_ONLY = RecordPrivacy()
