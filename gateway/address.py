"""Addresses: the one email rule the intake checks and the email channel sends with,
and how the suppression list keys an email or a phone number.

In the core, exported as ``gateway.check_address``, so the intake refuses at once what
an email channel would only refuse later, in the dead letters.
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

#: RFC 5322 ``atext`` plus ``.``: what an unquoted local part may hold.
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def check_address(value: str) -> str:
    """``value`` as a bare ``local@domain`` address, or ``ValueError`` saying why not.

    Accepted: an ASCII local part without quotes, and a domain of at least two labels
    (an internationalized domain is converted to its ASCII form).
    """
    if not isinstance(value, str) or not value:
        raise ValueError("no address")
    if any(unicodedata.category(ch)[0] in "CZ" for ch in value):
        raise ValueError("an address cannot hold spaces or control characters")
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        raise ValueError("an address needs a local part, '@' and a domain")
    if len(local) > 64 or not _LOCAL.match(local):
        raise ValueError(f"{local!r} is not a valid local part")
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"{domain!r} is not a valid domain") from None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{domain!r} is not a valid domain")
    address = f"{local}@{ascii_domain}"
    if len(address) > 254:
        raise ValueError("an address is at most 254 characters")
    return address


def normalise_address(address: str, region: str | None = None) -> str:
    """An email lower-cased, a phone number in E.164; ``ValueError`` saying why not.

    Email local parts are case-sensitive in theory (RFC 5321) and never in practice: one
    entry per mailbox matters more than telling ``Bob@`` from ``bob@``."""
    text = address.strip()
    if not text:
        raise ValueError("empty address")
    if "@" in text:
        local, _, domain = text.rpartition("@")
        if not local or "." not in domain or any(c.isspace() for c in text):
            raise ValueError(f"{address!r} is not an email address")
        return text.lower()
    if not text.startswith("+") and region is None:
        raise ValueError(
            f"{address!r}: a phone number in international format (+33...) or an email "
            "address (a national number needs a region: --region FR)"
        )
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        why = str(exc).split(") ", 1)[-1].rstrip(".").lower()  # "(3) The string..."
        raise ValueError(f"{address!r} is not a phone number: {why}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError(f"{address!r} is not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
