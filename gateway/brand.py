"""``[brand]``: who sends the customer emails, shown by the default layout.

The base table holds the values every locale shares; ``[brand.fr]``, ``[brand.en]``...
override some of them for one language (a legal line, an address written differently).
Templates see the values for the locale of the template folder being rendered as
``brand``: every field always present (an empty string when unset), so a layout can
test ``{% if brand.logo_url %}`` under StrictUndefined.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import msgspec

from .address import check_address

#: A locale sub-table's name: ``fr``, ``en``, ``fr-BE``, ``pt_BR``.
_LOCALE = re.compile(r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


class BrandFields(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: The merchant's name, as customers know it (also the logo's alt text).
    name: str = ""
    #: An https URL: the customer's mail client fetches it.
    logo_url: str = ""
    #: The postal address, one line per line (a TOML multi-line string).
    address: str = ""
    #: The legal line: "SAS au capital de 10 000 € — RCS Paris 123 456 789".
    legal: str = ""
    support_email: str = ""
    support_phone: str = ""
    #: An http(s) URL.
    website: str = ""


_FIELDS = tuple(f.name for f in msgspec.structs.fields(BrandFields))


class Brand(msgspec.Struct, kw_only=True):
    base: BrandFields = msgspec.field(default_factory=BrandFields)
    #: Per-locale overrides; only the fields a sub-table sets replace the base ones.
    locales: dict[str, dict[str, str]] = msgspec.field(default_factory=dict)

    def for_locale(self, locale: str | None, default_locale: str | None = None) -> dict[str, Any]:
        """The base values, overridden by ``[brand.fr]`` then ``[brand.fr-BE]`` for
        ``fr-BE`` (``default_locale`` when ``locale`` is None). Another locale's values
        are never borrowed: an English email shows the base legal line, not the French one.
        """
        values: dict[str, Any] = msgspec.structs.asdict(self.base)
        tag = (locale or default_locale or "").replace("_", "-")
        if tag:
            for key in dict.fromkeys((tag.split("-")[0], tag)):
                values.update(self.locales.get(key, {}))
        # Templates split the address themselves otherwise, and HTML needs <br> between lines.
        values["address_lines"] = [x.strip() for x in values["address"].splitlines() if x.strip()]
        return values


def _field_problems(path: str, fields: BrandFields) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if fields.logo_url:
        url = urlsplit(fields.logo_url)
        if url.scheme != "https" or not url.hostname:
            problems.append(
                (
                    f"{path}.logo_url",
                    "must be an https:// URL (mail clients fetch it; http is blocked or "
                    "shown as insecure, data: and file: are not fetched)",
                )
            )
    if fields.website:
        url = urlsplit(fields.website)
        if url.scheme not in ("https", "http") or not url.hostname:
            problems.append((f"{path}.website", "must be an http(s):// URL"))
    if fields.support_email:
        try:
            check_address(fields.support_email)
        except ValueError as exc:
            problems.append((f"{path}.support_email", str(exc)))
    return problems


def _decode(raw: dict[str, Any], path: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The valid fields of a table; every bad one reported (msgspec stops at the first)."""
    problems: list[tuple[str, str]] = []
    good: dict[str, str] = {}
    for key, value in raw.items():
        if key not in _FIELDS:
            problems.append((path, f"Object contains unknown field `{key}`"))
        elif not isinstance(value, str):
            problems.append((f"{path}.{key}", f"Expected `str`, got `{type(value).__name__}`"))
        else:
            good[key] = value
    for bad, reason in _field_problems(path, msgspec.convert(good, BrandFields)):
        problems.append((bad, reason))
        del good[bad.rpartition(".")[2]]
    return good, problems


def read_brand(raw: Any) -> tuple[Brand, list[tuple[str, str]]]:
    """The ``[brand]`` table and its problems as ``(dotted.path, reason)``; a bad value is
    reported and left out, so ``tocsin check`` still renders with the rest."""
    if not isinstance(raw, dict):
        return Brand(), [("brand", "must be a table")]
    base_raw = {k: v for k, v in raw.items() if not isinstance(v, dict)}
    base, problems = _decode(base_raw, "brand")
    locales: dict[str, dict[str, str]] = {}
    for key, value in raw.items():
        if not isinstance(value, dict):
            continue
        if not _LOCALE.match(key):
            problems.append((f"brand.{key}", "a sub-table names a locale (fr, en, fr-BE)"))
            continue
        locales[key.replace("_", "-")], found = _decode(value, f"brand.{key}")
        problems.extend(found)
    return Brand(base=msgspec.convert(base, BrandFields), locales=locales), problems
