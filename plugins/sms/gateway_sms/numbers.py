"""Phone numbers: recipients normalised to E.164 with ``phonenumbers``, senders checked.

E.164 is ``+``, the country code and the national significant number, at most 15 digits,
no spaces: ``06 12 34 56 78`` read with the default region FR is ``+33612345678``.
A number that is not valid fails its delivery for good, with a reason that says why
(masked: reasons end up in the dead letters, which operators read).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final, Literal

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

from gateway import PermanentError

#: Number types that cannot receive an SMS: refused when ``refuse_landlines`` is on.
#: (``FIXED_LINE_OR_MOBILE``, ``VOIP`` and ``UNKNOWN`` are let through.)
NOT_SMS_CAPABLE: Final = {
    PhoneNumberType.FIXED_LINE: "a fixed line",
    PhoneNumberType.TOLL_FREE: "a toll-free number",
    PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
    PhoneNumberType.SHARED_COST: "a shared-cost number",
    PhoneNumberType.UAN: "a universal access number",
    PhoneNumberType.VOICEMAIL: "a voicemail access number",
}

_PARSE_REASONS: Final = {
    NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
    NumberParseException.NOT_A_NUMBER: "not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short after the international prefix",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}

_ALPHANUMERIC_SENDER = re.compile(r"[A-Za-z0-9 ]{1,11}")


class InvalidNumber(PermanentError):
    """The recipient's number cannot receive an SMS: the delivery fails for good."""


def mask(number: str) -> str:
    """``+33612345678`` -> ``+33•••••••78``: enough to recognise, not to reuse."""
    text = number.strip()
    digits = [i for i, ch in enumerate(text) if ch.isdigit()]
    keep = set(digits[:2] + digits[-2:]) if len(digits) > 6 else set(digits[:1])
    return "".join(ch if i in keep or not ch.isdigit() else "•" for i, ch in enumerate(text))


def valid_region(region: str) -> bool:
    return region in phonenumbers.SUPPORTED_REGIONS


@functools.lru_cache(maxsize=4096)
def to_e164(raw: str, default_region: str | None, *, refuse_landlines: bool = True) -> str:
    """The recipient number in E.164, or ``InvalidNumber`` saying what is wrong with it.

    Remembered (a pure function of its arguments): the suppression check before a send
    and the send itself each ask, and ~140 µs of phonenumbers is then paid once."""
    shown = mask(raw)
    text = raw.strip()
    if not text:
        raise InvalidNumber("recipient phone number is empty")
    if not text.startswith("+") and default_region is None:
        raise InvalidNumber(
            f"recipient phone {shown} is not in international format (+33...) and the "
            "channel sets no default_region to read national numbers with"
        )
    try:
        parsed = phonenumbers.parse(text, default_region)
    except NumberParseException as exc:
        why = _PARSE_REASONS.get(exc.error_type, str(exc))
        raise InvalidNumber(f"recipient phone {shown} is not a valid number: {why}") from None
    region = phonenumbers.region_code_for_number(parsed) or default_region or "?"
    if not phonenumbers.is_valid_number(parsed):
        possible = phonenumbers.is_possible_number_with_reason(parsed)
        why = {
            phonenumbers.ValidationResult.TOO_SHORT: "too short",
            phonenumbers.ValidationResult.TOO_LONG: "too long",
            phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
        }.get(possible, "no such number range")
        raise InvalidNumber(
            f"recipient phone {shown} is not a valid number for region {region}: {why}"
        )
    if refuse_landlines:
        kind = NOT_SMS_CAPABLE.get(phonenumbers.number_type(parsed))
        if kind is not None:
            raise InvalidNumber(
                f"recipient phone {shown} is {kind} ({region}) and cannot receive SMS"
            )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@dataclass(frozen=True)
class Sender:
    """A validated sender: an alphanumeric sender ID or an E.164 number."""

    kind: Literal["alphanumeric", "number"]
    value: str


def parse_sender(raw: str) -> Sender:
    """Check a conf's ``sender``; ``ValueError`` (a conf problem) when it cannot be one.

    Alphanumeric: 1-11 characters from A-Z, a-z, 0-9 and space, at least one letter, no
    leading or trailing space. Number: E.164 (``+33612345678``; spaces are tolerated and
    removed). Operators in France block application traffic sent from +33 6 / +33 7
    mobile numbers: prefer an alphanumeric sender there.
    """
    if raw.strip().startswith("+"):
        try:
            parsed = phonenumbers.parse(raw.strip(), None)
        except NumberParseException:
            parsed = None
        if parsed is None or not phonenumbers.is_valid_number(parsed):
            raise ValueError(f"{raw!r} is not a valid E.164 phone number")
        e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
        return Sender("number", e164)
    value = raw
    if not value:
        raise ValueError("must not be empty")
    if len(value) > 11:
        raise ValueError(
            f"{raw!r} is {len(value)} characters long: an alphanumeric sender ID "
            "has at most 11 (or use an E.164 number such as +33612345678)"
        )
    if not _ALPHANUMERIC_SENDER.fullmatch(value):
        raise ValueError(f"{raw!r}: an alphanumeric sender ID uses only A-Z, a-z, 0-9 and spaces")
    if value != value.strip():
        raise ValueError(f"{raw!r} must not start or end with a space")
    if not any(ch.isalpha() for ch in value):
        raise ValueError(
            f"{raw!r} has no letter: an alphanumeric sender ID needs at least one, "
            "and a number must be written in E.164 (+33612345678)"
        )
    return Sender("alphanumeric", value)
