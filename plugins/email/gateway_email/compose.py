"""Build one email: checked addresses, safe header values, text + HTML parts.

Every header value that may come from event data (the customer's name and address, the
subject rendered from a template) goes through ``header_text`` or ``check_address``:
CR, LF and every other control character become spaces or make the value invalid, so
no value can start a header of its own (``"Dupont\\r\\nBcc: evil@x"``).

Two ways to the same bytes: ``build_message`` makes an ``EmailMessage`` (what a reader
of the code, ``Email.message`` and the tests use), ``message_bytes`` writes what
``build_message(...).as_bytes(policy=SMTP)`` would write, without the stdlib's header
objects: parsing and refolding ten headers per message cost more than rendering the
templates (issue #15). tests/test_email_bytes.py holds the two to byte equality.
"""

from __future__ import annotations

import functools
import random
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from email import quoprimime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

import css_inline

_DELIVERY_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

#: css-inline never fetches a stylesheet: templates cannot make the gateway call out.
_INLINER = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


#: What a header line break could come from. Only these collapse: ``str.split()`` would
#: also take the no-break spaces a locale puts in amounts (``1\u202f234,50\xa0€`` in
#: fr-FR) and dates, which must reach the subject as they reach the body.
_BREAKS = re.compile(r"[ \t\n\r\f\v\x1c-\x1f\x85\u2028\u2029]+")
#: Unicode's Cc category, all of it: U+0000-U+001F and U+007F-U+009F.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def header_text(value: str) -> str:
    """One line of text for a header: runs of ASCII white space (CR and LF too) become
    one space; other control characters go."""
    return _CONTROLS.sub("", _BREAKS.sub(" ", value).strip(" "))


def mailbox(address: str, name: str | None = None) -> Address:
    username, _, domain = address.rpartition("@")
    return Address(display_name=header_text(name or ""), username=username, domain=domain)


def message_id(delivery_id: str, from_address: str) -> str:
    """The same on every attempt of a delivery: receivers and clients drop duplicates."""
    if not _DELIVERY_ID.match(delivery_id):
        raise ValueError(f"delivery id {delivery_id!r} cannot name a message")
    return f"<{delivery_id}@{from_address.rpartition('@')[2]}>"


def inline_css(html: str) -> str:
    return _INLINER.inline(html)


@dataclass(frozen=True)
class Parts:
    """What the templates rendered, before it becomes MIME."""

    subject: str
    text: str
    html: str | None


def build_message(
    *,
    delivery_id: str,
    sender: Address,
    recipient: Address,
    reply_to: Address | None,
    parts: Parts,
    date: datetime,
) -> EmailMessage:
    """A 7-bit clean message: RFC 2047 headers, quoted-printable UTF-8 bodies."""
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = recipient
    if reply_to is not None:
        message["Reply-To"] = reply_to
    message["Subject"] = parts.subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id(delivery_id, sender.addr_spec)
    # RFC 3834: no vacation or out-of-office replies to a machine's message.
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    message["X-Tocsin-Delivery"] = delivery_id
    message.set_content(parts.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if parts.html is not None:
        message.add_alternative(parts.html, subtype="html", charset="utf-8", cte="quoted-printable")
        for part in message.iter_parts():
            del part["MIME-Version"]  # the stdlib copies it into the parts; it belongs on top
    return message


# -- the same bytes, written directly ----------------------------------------------------

#: SMTP's line length, as the stdlib folds headers and wraps quoted-printable bodies.
_MAX_LINE = 78
_CRLF = "\r\n"
#: Values whose header the stdlib writes as ``Name: value`` when the line fits: printable
#: ASCII words between single spaces, no encoded-word lookalike (checked apart).
_PLAIN_TEXT = re.compile(r"[!-~]+(?: [!-~]+)*")
#: A mailbox whose string form needs no quoting nor encoding: atom words for the display
#: name and a dot-atom address. Anything else (accents, dots or commas in a name) goes
#: through the stdlib.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9]+(?: [A-Za-z0-9]+)*")
_PLAIN_ADDR = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_PLAIN_MSGID = re.compile(r"<[A-Za-z0-9_-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*>")
_ADDRESS_HEADERS = frozenset({"from", "to", "reply-to"})


def _plain(name: str, value: str) -> bool:
    """Whether the stdlib would write this header as ``Name: value`` on one line."""
    if len(name) + 2 + len(value) > _MAX_LINE:
        return False
    kind = name.lower()
    if kind == "message-id":
        return _PLAIN_MSGID.fullmatch(value) is not None
    return _PLAIN_TEXT.fullmatch(value) is not None and "=?" not in value


def header_bytes(name: str, value: str | Address) -> bytes:
    """``name: value`` folded and encoded as ``EmailMessage(policy=SMTP)`` writes it."""
    if isinstance(value, Address):
        plain = (
            not value.display_name or _PLAIN_NAME.fullmatch(value.display_name) is not None
        ) and _PLAIN_ADDR.fullmatch(value.addr_spec) is not None
        text = str(value)
        if plain and len(name) + 2 + len(text) <= _MAX_LINE:
            return f"{name}: {text}{_CRLF}".encode("ascii")
    elif name.lower() not in _ADDRESS_HEADERS and _plain(name, value):
        return f"{name}: {value}{_CRLF}".encode("ascii")
    # Encoded words, quoting, folding: the stdlib's own header classes, as build_message.
    return SMTP.fold_binary(name, SMTP.header_factory(name, value))


def _qp_body(text: str) -> bytes:
    """A UTF-8 text body in quoted-printable with CRLF line ends, as set_content(cte=
    "quoted-printable") and BytesGenerator write it: the same stdlib encoder, one line at
    a time. body_encode escapes every CR and LF left after ``splitlines``, and encodes
    each line on its own, so joining encoded lines is the same; and most lines (the
    layout's) are the same in every message."""
    lines = text.encode("utf-8").splitlines()
    return ("\r\n".join(map(_qp_line, lines)) + "\r\n").encode("ascii")


@functools.lru_cache(maxsize=4096)
def _qp_line(line: bytes) -> str:
    return quoprimime.body_encode(line.decode("latin-1"), _MAX_LINE, _CRLF) if line else ""


_MIME_VERSION = header_bytes("MIME-Version", "1.0")
_AUTO_SUBMITTED = header_bytes("Auto-Submitted", "auto-generated")
_NO_AUTO_REPLY = header_bytes("X-Auto-Response-Suppress", "All")
_TEXT_PART = b'Content-Type: text/plain; charset="utf-8"\r\n'
_HTML_PART = b'Content-Type: text/html; charset="utf-8"\r\n'
_QP = b"Content-Transfer-Encoding: quoted-printable\r\n"
_BOUNDARY = re.compile(r"={15}[0-9]{19}==")
#: Every boundary of make_boundary's shape folds the same way: fold one, swap it in.
_SAMPLE_BOUNDARY = "=" * 15 + "0" * 19 + "=="
_MULTIPART = header_bytes(
    "Content-Type", f'multipart/alternative; boundary="{_SAMPLE_BOUNDARY}"'
).decode("ascii")


def make_boundary() -> str:
    """The stdlib's boundary (``Generator._make_boundary``): 15 ``=``, 19 digits, ``==``.

    It can never occur in the parts: their bodies are quoted-printable, where every
    ``=`` of the text is written ``=3D``, and their headers are fixed."""
    return "=" * 15 + f"{random.randrange(sys.maxsize):019d}" + "=="


def _multipart(boundary: str) -> bytes:
    if _BOUNDARY.fullmatch(boundary):
        return _MULTIPART.replace(_SAMPLE_BOUNDARY, boundary).encode("ascii")
    return header_bytes("Content-Type", f'multipart/alternative; boundary="{boundary}"')


class MessageWriter:
    """``message_bytes`` for one sender: the headers that never change, folded once."""

    def __init__(self, sender: Address, reply_to: Address | None) -> None:
        self.sender = sender
        self._from = header_bytes("From", sender)
        self._reply_to = header_bytes("Reply-To", reply_to) if reply_to is not None else b""

    def message_bytes(
        self,
        *,
        delivery_id: str,
        recipient: Address,
        parts: Parts,
        date: datetime,
        boundary: str | None = None,
    ) -> bytes:
        """``build_message(...).as_bytes(policy=SMTP)``, byte for byte (same ``boundary``)."""
        head = [
            self._from,
            header_bytes("To", recipient),
            self._reply_to,
            header_bytes("Subject", parts.subject),
            header_bytes("Date", format_datetime(date)),
            header_bytes("Message-ID", message_id(delivery_id, self.sender.addr_spec)),
            _AUTO_SUBMITTED,
            _NO_AUTO_REPLY,
            header_bytes("X-Tocsin-Delivery", delivery_id),
        ]
        text = _qp_body(parts.text)
        if parts.html is None:
            head += [_TEXT_PART, _QP, _MIME_VERSION, b"\r\n", text]
            return b"".join(head)
        boundary = boundary or make_boundary()
        dash = f"--{boundary}".encode("ascii")
        head += [
            _MIME_VERSION,
            _multipart(boundary),
            b"\r\n",
            dash + b"\r\n",
            _TEXT_PART + _QP + b"\r\n",
            text,
            b"\r\n" + dash + b"\r\n",
            _HTML_PART + _QP + b"\r\n",
            _qp_body(parts.html),
            b"\r\n" + dash + b"--\r\n",
        ]
        return b"".join(head)
