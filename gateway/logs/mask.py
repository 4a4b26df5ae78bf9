"""Personal data out of log text: emails, phone numbers, IBANs, and names the caller knows.

Emails, international phone numbers and IBANs have a shape, so they are found anywhere in
a line. Names have none: they are masked only where the gateway knows the value (the
customer of the delivery being sent, see ``context``), as are that customer's email and
phone in any spelling (``0612345678``, ``33612345678``).

False positives matter as much as misses: a masked amount or id makes a log useless. So a
phone is a ``+`` (or ``00``) number that ``phonenumbers`` calls valid, not any digit run;
an IBAN must pass its mod-97 check; and neither may start inside a word (``evt_33612...``)
or right after a digit (the ``+01:00`` of a timestamp).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import quote, quote_plus

import phonenumbers

_EMAIL = r"(?P<email>(?<![\w.+-])[\w.+-]+@(?P<domain>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+))"
# +, or the 00 international prefix, then 7 to 15 digits that may be grouped by spaces,
# dots, dashes or brackets; never glued to a word or a digit on its left.
_PHONE = r"(?P<phone>(?<![\w+])(?:\+|00)[1-9](?:[ .\-()]{0,2}\d){6,14})(?![\w])"
# Country, check digits, 11 to 30 letters/digits, in groups of 4 or not.
_IBAN = r"(?P<iban>(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30})(?![A-Za-z0-9])"
_FOUND = re.compile(f"{_EMAIL}|{_PHONE}|{_IBAN}")
# Cheap test before the regex: none of the three can appear without one of these.
_HINTS = re.compile(r"[@+]|00|[A-Z]{2}\d\d")

STARS = "***"
#: A word of a name worth masking alone: 3 letters or more ("de", "Li" are everywhere).
_ASCII_RUN = re.compile(r"[a-z0-9]+")
_NOT_DIGIT = re.compile(r"\D")
_NAME_WORD = re.compile(r"[^\W\d_][\w'-]{2,}")


def mask_email(text: str) -> str:
    local, _, domain = text.partition("@")
    return f"{local[:1]}{STARS}@{domain}"


def mask_phone(number: phonenumbers.PhoneNumber) -> str:
    """``+33******78``: the country code and the last two digits; the length is hidden."""
    national = phonenumbers.national_significant_number(number)
    return f"+{number.country_code}******{national[-2:]}"


def mask_iban(compact: str) -> str:
    """Country and last four kept: enough to tell two accounts apart in an incident."""
    return compact[:2] + "*" * (len(compact) - 6) + compact[-4:]


def mask_name(name: str) -> str:
    """``Jeanne Dupont`` -> ``J*** D***``."""
    return " ".join(f"{word[:1]}{STARS}" for word in name.split())


def _iban_valid(compact: str) -> bool:
    moved = compact[4:] + compact[:4]
    digits = "".join(str(int(c, 36)) for c in moved)
    return int(digits) % 97 == 1


def _phone(text: str) -> phonenumbers.PhoneNumber | None:
    digits = re.sub(r"\D", "", text)
    if text.startswith("00"):
        digits = digits[2:]
    try:
        number = phonenumbers.parse("+" + digits)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


def _replace(found: re.Match[str]) -> str:
    text = found.group(0)
    if found.group("email"):
        return mask_email(text)
    if found.group("phone"):
        number = _phone(text)
        return text if number is None else mask_phone(number)
    compact = text.replace(" ", "")
    return mask_iban(compact) if _iban_valid(compact) else text


class _Masks:
    """Known values, each with its mask, matched in any case (an ERP may
    write the surname in capitals), longest first (a full name before its parts).

    Each value also in the spellings that carry it through JSON (``Z\\u00e9phyrine``) and
    URLs (``%2B33...``, ``Z%C3%A9phyrine``): receivers quote bodies back in errors. A value
    starting or ending with a letter only matches as a whole word (``Ana`` is not masked in
    ``Analysis``); with a digit, only if no digit touches it (``%2B33...`` is found).
    """

    def __init__(self, pairs: dict[str, str]) -> None:
        spelled: dict[str, str] = {}
        for raw, masked in pairs.items():
            for spelling in (raw, json.dumps(raw)[1:-1], quote(raw, safe=""), quote_plus(raw)):
                spelled.setdefault(spelling, masked)
        self.masks = {raw.casefold(): masked for raw, masked in spelled.items()}
        raws = sorted(spelled, key=len, reverse=True)
        alternatives = "|".join(_bounded(raw) for raw in raws)
        self.pattern = re.compile(alternatives, re.IGNORECASE) if raws else None

    def sub(self, text: str) -> str:
        if self.pattern is None:
            return text
        return self.pattern.sub(
            lambda found: self.masks.get(found.group(0).casefold(), STARS), text
        )


def _bounded(raw: str) -> str:
    def edge(char: str) -> str:
        return r"\w" if char.isalpha() else r"\d" if char.isdigit() else ""

    before, after = edge(raw[0]), edge(raw[-1])
    return (f"(?<!{before})" if before else "") + re.escape(raw) + (f"(?!{after})" if after else "")


class Known:
    """One customer's (or several) personal values, to mask wherever they appear.

    Built for every delivery that logs a line, so cheap until a line may hold one: only
    plain substrings are checked (the longest ASCII run of each spelling, the last digits
    of a phone), and the full matcher is built on the first line that contains one.
    """

    def __init__(
        self, names: tuple[str, ...], emails: tuple[str, ...], phones: tuple[str, ...]
    ) -> None:
        self.values = (names, emails, phones)
        # Every name word, as the full matcher masks names word by word too.
        words = [word for name in names for word in _NAME_WORD.findall(name)]
        self._needles = {needle for value in (*words, *emails) for needle in _needles(value)}
        digits = [re.sub(r"\D", "", phone) for phone in phones]
        # The last two digits stay together in every way of writing a number.
        self._tails = {(d[-2:], d[-7:]) for d in digits if len(d) >= 7}
        self._masks: _Masks | None = None

    @property
    def empty(self) -> bool:
        return not (self._needles or self._tails)

    def sub(self, text: str) -> str:
        folded = text.casefold()
        if not any(needle in folded for needle in self._needles) and not any(
            last in text and tail in _NOT_DIGIT.sub("", text) for last, tail in self._tails
        ):
            return text
        if self._masks is None:
            self._masks = _masks(*self.values)
        return self._masks.sub(text)


def _needles(value: str) -> set[str]:
    """Substrings every spelling of ``value`` contains, in any case: its longest run of
    ASCII letters and digits (JSON and URL escapes only touch what lies around it), or
    when that run is short, the value as is, JSON-escaped and URL-encoded."""
    folded = value.casefold()
    longest = max(_ASCII_RUN.findall(folded), key=len, default="")
    if len(longest) >= 3:
        return {longest}
    return {folded, json.dumps(folded)[1:-1], quote(folded, safe="").casefold()}


NOTHING_KNOWN = Known((), (), ())


def mask_text(text: str, known: Known = NOTHING_KNOWN) -> str:
    """``text`` with every email, phone and IBAN masked, and the values of ``known``."""
    if not known.empty:
        text = known.sub(text)
    if _HINTS.search(text) is None:
        return text
    return _FOUND.sub(_replace, text)


@lru_cache(maxsize=4096)
def phone_spellings(e164: str) -> tuple[str, ...]:
    """The ways a provider or a receiver may write ``e164`` back in an error message."""
    try:
        number = phonenumbers.parse(e164)
    except phonenumbers.NumberParseException:
        return (e164,)
    national = phonenumbers.national_significant_number(number)
    spellings = {
        e164,
        e164.lstrip("+"),  # Vonage, many SMS APIs: msisdn without the +
        "00" + e164.lstrip("+"),
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL),
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL),
        "0" + national,
    }
    return tuple(s for s in spellings if len(re.sub(r"\D", "", s)) >= 6)


def known_values(
    names: Iterable[str | None], emails: Iterable[str | None], phones: Iterable[str | None]
) -> Known:
    """The values of one customer (or several) to mask wherever they appear."""

    def present(values: Iterable[str | None]) -> tuple[str, ...]:
        return tuple(v for v in values if v and v.strip())

    return Known(present(names), present(emails), present(phones))


def _masks(names: tuple[str, ...], emails: tuple[str, ...], phones: tuple[str, ...]) -> _Masks:
    """The full matcher: each value in each spelling, with its mask.

    A name is also masked word by word (an ERP error may quote the surname alone), for
    words of 3 letters or more: shorter ones ("de", "Li") match inside ordinary words.
    """
    pairs: dict[str, str] = {}
    for name in names:
        pairs[name] = mask_name(name)
        for word in _NAME_WORD.findall(name):
            pairs.setdefault(word, mask_name(word))
    for email in emails:
        pairs[email] = mask_email(email)
    for phone in phones:
        number = _phone(phone)
        masked = mask_phone(number) if number is not None else STARS
        for spelling in phone_spellings(phone):
            pairs[spelling] = masked
    return _Masks(pairs)
