"""Email addresses: the one rule the intake checks and the email channel sends with.

In the core, exported as ``gateway.check_address``, so the intake refuses at once what
an email channel would only refuse later, in the dead letters.
"""

from __future__ import annotations

import re
import unicodedata

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
