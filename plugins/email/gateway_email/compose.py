"""Build one email: checked addresses, safe header values, text + HTML parts.

Every header value that may come from event data (the customer's name and address, the
subject rendered from a template) goes through ``header_text`` or ``check_address``:
CR, LF and every other control character become spaces or make the value invalid, so
no value can start a header of its own (``"Dupont\\r\\nBcc: evil@x"``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
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


def header_text(value: str) -> str:
    """One line of text for a header: runs of ASCII white space (CR and LF too) become
    one space; other control characters go."""
    text = _BREAKS.sub(" ", value).strip(" ")
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cc")


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
