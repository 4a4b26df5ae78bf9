"""Locale-aware template filters for payment messages: money, dates, masks, relative days.

Registered by the core's own plugin (``gateway.default_plugins``). Each filter reads the
recipient's locale from the template context (``locale``, set by ``template_context``),
falling back to the conf's ``gateway.default_locale`` (``default_locale``, a global of
every ``Templates`` environment), then to ``en``. Dates are shown in the time zone given
by the filter's ``tz=``, else the context's ``timezone``, else ``default_timezone``
(``Europe/Paris``).

Formatting follows CLDR through Babel, byte for byte: French groups thousands with a
narrow no-break space (U+202F) and puts a no-break space (U+00A0) before the currency
sign, ``1234.50 EUR`` -> ``"1\\u202f234,50\\u00a0€"``. The ``format_*`` functions are the
same formatting without a template, for Python callers.

A filter given something it cannot format raises ``TypeError`` / ``ValueError`` with the
filter's name and the value; the delivery then fails with the template's file and line.
"""

from __future__ import annotations

import copy
import functools
import math
import re
import unicodedata
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from babel import Locale, UnknownLocaleError
from babel import dates as babel_dates
from babel import numbers as babel_numbers
from jinja2.runtime import Context

from .templating import DEFAULT_TIMEZONE, locale_chain

#: The last resort when neither the context nor the environment names a usable locale.
FALLBACK_LOCALE = "en"
#: What masks put in place of hidden digits (U+2022 BULLET).
MASK = "\u2022\u2022\u2022\u2022"

#: ISO 4217 minor-unit exponents other than 2 (list one, 2024). Babel's own digits come
#: from CLDR, which rounds some currencies for display (IQD 0, ISO 3): never trusted for
#: minor units, or 1234 fils would be shown as 1 dinar.
_EXPONENT_0 = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_EXPONENT_3 = "BHD IQD JOD KWD LYD OMR TND"
_EXPONENT_4 = "CLF UYW"
_EXPONENTS: dict[str, int] = {
    code: exponent
    for codes, exponent in ((_EXPONENT_0, 0), (_EXPONENT_3, 3), (_EXPONENT_4, 4))
    for code in codes.split()
}
#: Codes ISO 4217 lists without a minor unit (metals, funds, testing): no amount to show.
_NO_MINOR_UNIT_CODES = "XAG XAU XBA XBB XBC XBD XDR XPD XPT XSU XTS XUA XXX"
_NO_MINOR_UNIT = frozenset(_NO_MINOR_UNIT_CODES.split())
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_IBAN = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$")
_DATE_FORMATS = ("short", "medium", "long", "full")
#: "Today" for ``relative_days``: CLDR has it (relative day 0) but Babel does not ship it.
_TODAY = {
    "fr": "aujourd\u2019hui",
    "en": "today",
    "de": "heute",
    "es": "hoy",
    "it": "oggi",
    "nl": "vandaag",
    "pt": "hoje",
}


# -- what a value and a context resolve to ------------------------------------------------


def _defined(value: Any) -> Any:
    """An undefined variable raises its own error (``'data' has no attribute 'x'``)."""
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises UndefinedError here, naming what is missing
        raise jinja2.UndefinedError("a filter was given an undefined value")
    return value


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


@functools.lru_cache(maxsize=256)
def resolve_locale(locale: str | None, default: str | None = None) -> Locale:
    """``fr-BE`` -> ``fr_BE``; unknown tags fall back like templates (``fr-XX`` -> ``fr``)."""
    for tag in locale_chain(locale, default or FALLBACK_LOCALE):
        try:
            return Locale.parse(tag.replace("-", "_"))
        except (ValueError, TypeError, UnknownLocaleError):
            continue
    return Locale.parse(FALLBACK_LOCALE)


def resolve_timezone(name: Any) -> tzinfo:
    name = _defined(name)
    if isinstance(name, tzinfo):
        return name
    if not isinstance(name, str):
        raise TypeError(f"time zone must be a name such as 'Europe/Paris', got {_kind(name)}")
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (try 'Europe/Paris', 'UTC')") from None


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _context_locale(ctx: Context) -> Locale:
    locale = ctx.get("locale")
    default = ctx.get("default_locale")
    return resolve_locale(
        locale if isinstance(locale, str) else None,
        default if isinstance(default, str) else None,
    )


def _context_timezone(ctx: Context, tz: Any) -> tzinfo:
    if tz is not None:
        return resolve_timezone(tz)
    for key in ("timezone", "default_timezone"):
        found = ctx.get(key)
        if found is not None and not isinstance(found, jinja2.Undefined):
            return resolve_timezone(found)
    return resolve_timezone(DEFAULT_TIMEZONE)


def _parse_moment(value: Any, what: str, *, dates: bool) -> datetime | date:
    """An aware datetime, or (``dates``) a plain date, from a datetime/date or ISO string."""
    value = _defined(value)
    moment: datetime | date
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        if not dates:
            raise ValueError(f"{what}: {value!r} is a date without a time")
        return value
    elif isinstance(value, str):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            pass
        else:
            if not dates:
                raise ValueError(f"{what}: {value!r} is a date without a time")
            return day
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{what}: {value!r} is not an ISO 8601 date-time (2026-11-25T10:15:00Z)"
            ) from None
    else:
        raise TypeError(f"{what}: expected an ISO 8601 string or a datetime, got {_kind(value)}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what}: {value!r} has no time zone offset (add Z or +01:00)")
    return moment


def _now(ctx: Context) -> datetime:
    found = ctx.get("now")
    if found is None or isinstance(found, jinja2.Undefined):
        return datetime.now(UTC)
    moment = _parse_moment(found, "now", dates=False)
    assert isinstance(moment, datetime)
    return moment


# -- money --------------------------------------------------------------------------------


def currency_exponent(currency: str) -> int:
    """Digits after the decimal point in ISO 4217: JPY 0, EUR 2, KWD 3."""
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise ValueError(f"money: currency must be an ISO 4217 code ('EUR'), got {currency!r}")
    if currency in _NO_MINOR_UNIT or not babel_numbers.is_currency(currency):
        raise ValueError(f"money: {currency!r} is not a currency with minor units")
    return _EXPONENTS.get(currency, 2)


@functools.lru_cache(maxsize=256)
def _money_pattern(locale: Locale, exponent: int) -> babel_numbers.NumberPattern:
    pattern = copy.copy(locale.currency_formats["standard"])
    pattern.frac_prec = (exponent, exponent)
    return pattern  # type: ignore[no-any-return]


def format_money(amount_minor: Any, currency: Any, locale: Locale | str | None = None) -> str:
    """``1234550, "EUR", "fr"`` -> ``"12\\u202f345,50\\u00a0€"``; ``"en"`` -> ``"€12,345.50"``."""
    amount_minor, currency = _defined(amount_minor), _defined(currency)
    if not isinstance(amount_minor, int) or isinstance(amount_minor, bool):
        raise TypeError(
            f"money: amounts are integers in minor units (1250 = 12.50), got {_kind(amount_minor)}"
        )
    if not isinstance(currency, str):
        currency_exponent(currency)  # raises, naming the value (unhashable ones too)
    loc = locale if isinstance(locale, Locale) else resolve_locale(locale)
    return _format_money(amount_minor, currency, loc)


@functools.lru_cache(maxsize=1024)
def _format_money(amount_minor: int, currency: str, loc: Locale) -> str:
    """Remembered: an email shows its amount in the subject, the HTML and the text, and
    Babel's ``format_currency`` (currency checks, plural rules for a name it does not
    use) costs more than the rest of the ``money`` filter. Errors are not remembered."""
    exponent = currency_exponent(currency)
    value = Decimal(amount_minor).scaleb(-exponent)
    text = babel_numbers.format_currency(
        value, currency, format=_money_pattern(loc, exponent), locale=loc, currency_digits=False
    )
    return _currency_spacing(text, babel_numbers.get_currency_symbol(currency, loc))


def _currency_spacing(text: str, symbol: str) -> str:
    """CLDR's currencySpacing, which Babel skips: ``CHF1,234.50`` -> ``CHF\u00a01,234.50``.

    A no-break space goes between a digit and a symbol whose edge is a letter, never next
    to a sign such as € or $ (``€1,234.50`` stays as it is).
    """
    at = text.find(symbol)
    if at < 0 or not symbol:
        return text
    end = at + len(symbol)
    if end < len(text) and text[end].isdigit() and _letter(symbol[-1]):
        return f"{text[:end]}\u00a0{text[end:]}"
    if at > 0 and text[at - 1].isdigit() and _letter(symbol[0]):
        return f"{text[:at]}\u00a0{text[at:]}"
    return text


def _letter(char: str) -> bool:
    return not unicodedata.category(char).startswith(("S", "Z"))


@jinja2.pass_context
def money(ctx: Context, amount_minor: Any, currency: Any) -> str:
    """``{{ data.amount | money(data.currency) }}``: minor units shown in the recipient's locale."""
    return format_money(amount_minor, currency, _context_locale(ctx))


# -- dates and times ----------------------------------------------------------------------


def _check_format(format: Any, what: str) -> str:
    format = _defined(format)
    if not isinstance(format, str) or not format:
        raise TypeError(f"{what}: format must be one of {', '.join(_DATE_FORMATS)} or a pattern")
    return format


def format_date(
    value: Any, format: str = "long", tz: tzinfo | str = DEFAULT_TIMEZONE, locale: Any = None
) -> str:
    """A date (``2026-12-01``) as is; a date-time as the date it is in ``tz``."""
    format = _check_format(format, "date")
    moment = _parse_moment(value, "date", dates=True)
    day = moment.astimezone(resolve_timezone(tz)).date() if isinstance(moment, datetime) else moment
    loc = locale if isinstance(locale, Locale) else resolve_locale(locale)
    return babel_dates.format_date(day, format, locale=loc)


def format_datetime(
    value: Any, format: str = "medium", tz: tzinfo | str = DEFAULT_TIMEZONE, locale: Any = None
) -> str:
    format = _check_format(format, "datetime")
    moment = _parse_moment(value, "datetime", dates=False)
    loc = locale if isinstance(locale, Locale) else resolve_locale(locale)
    return babel_dates.format_datetime(moment, format, tzinfo=resolve_timezone(tz), locale=loc)


def format_time(
    value: Any, format: str = "short", tz: tzinfo | str = DEFAULT_TIMEZONE, locale: Any = None
) -> str:
    format = _check_format(format, "time")
    moment = _parse_moment(value, "time", dates=False)
    assert isinstance(moment, datetime)
    loc = locale if isinstance(locale, Locale) else resolve_locale(locale)
    zone = resolve_timezone(tz)
    # Babel reads the zone from tzinfo=; converting first keeps DST right for the day.
    return babel_dates.format_time(moment.astimezone(zone), format, tzinfo=zone, locale=loc)


@jinja2.pass_context
def date_filter(ctx: Context, value: Any, format: str = "long", tz: Any = None) -> str:
    """``{{ occurred_at | date }}`` -> ``25 novembre 2026``; formats short/medium/long/full."""
    return format_date(value, format, _context_timezone(ctx, tz), _context_locale(ctx))


@jinja2.pass_context
def datetime_filter(ctx: Context, value: Any, format: str = "medium", tz: Any = None) -> str:
    """``{{ occurred_at | datetime("short") }}`` -> ``25/11/2026 11:15``."""
    return format_datetime(value, format, _context_timezone(ctx, tz), _context_locale(ctx))


@jinja2.pass_context
def time_filter(ctx: Context, value: Any, format: str = "short", tz: Any = None) -> str:
    """``{{ occurred_at | time }}`` -> ``11:15`` (fr), ``11:15\\u202fAM`` (en)."""
    return format_time(value, format, _context_timezone(ctx, tz), _context_locale(ctx))


# -- relative days ------------------------------------------------------------------------


def format_relative_days(
    value: Any,
    now: datetime | None = None,
    tz: tzinfo | str = DEFAULT_TIMEZONE,
    locale: Any = None,
) -> str:
    """Calendar days from ``now`` to ``value`` in ``tz``: ``dans 3 jours``, ``il y a 2 jours``.

    Always in days (a due date 45 days away is ``dans 45 jours``, not "in 2 months");
    the same day is "today" where the locale's word is known, else Babel's ``in 0 days``.
    """
    zone = resolve_timezone(tz)
    moment = _parse_moment(value, "relative_days", dates=True)
    target = moment.astimezone(zone).date() if isinstance(moment, datetime) else moment
    today = (now or datetime.now(UTC)).astimezone(zone).date()
    days = (target - today).days
    loc = locale if isinstance(locale, Locale) else resolve_locale(locale)
    if days == 0 and loc.language in _TODAY:
        return _TODAY[loc.language]
    return babel_dates.format_timedelta(
        timedelta(days=days),
        granularity="day",
        threshold=math.inf,
        add_direction=True,
        locale=loc,
    )


@jinja2.pass_context
def relative_days(ctx: Context, value: Any, tz: Any = None) -> str:
    """``{{ data.due_date | relative_days }}``, counted from the context's ``now``."""
    return format_relative_days(value, _now(ctx), _context_timezone(ctx, tz), _context_locale(ctx))


# -- masks --------------------------------------------------------------------------------


def card_mask(last4: Any) -> str:
    """``"4242"`` -> ``"•••• 4242"``. Longer digit strings keep only their last 4 digits."""
    last4 = _defined(last4)
    if not isinstance(last4, str):
        # A number would have lost its leading zeros: "0042" is not 42.
        raise TypeError(f"card_mask: expected the digits as a string ('4242'), got {_kind(last4)}")
    digits = re.sub(r"[\s-]", "", last4)
    if len(digits) < 4 or not digits.isascii() or not digits.isdigit():
        raise ValueError(f"card_mask: {last4!r} is not the last 4 digits of a card")
    return f"{MASK} {digits[-4:]}"


def iban_mask(iban: Any) -> str:
    """``"FR76 3000 6000 0112 3456 7890 189"`` -> ``"FR76 •••• •••• 0189"``.

    Spaces are ignored, letters upper-cased; a string that is not an IBAN (shape,
    ISO 13616 mod-97 check digits) is refused rather than shown half-masked.
    """
    iban = _defined(iban)
    if not isinstance(iban, str):
        raise TypeError(f"iban_mask: expected an IBAN string, got {type(iban).__name__}")
    compact = re.sub(r"\s", "", iban).upper()
    if not _IBAN.match(compact) or not _iban_checksum_ok(compact):
        # Never echo the whole value: it is an account number.
        raise ValueError(f"iban_mask: not a valid IBAN (ending {compact[-4:]!r})")
    return f"{compact[:4]} {MASK} {MASK} {compact[-4:]}"


def _iban_checksum_ok(compact: str) -> bool:
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


#: What the core's plugin registers, by filter name.
FILTERS: dict[str, Callable[..., Any]] = {
    "money": money,
    "date": date_filter,
    "datetime": datetime_filter,
    "time": time_filter,
    "relative_days": relative_days,
    "card_mask": card_mask,
    "iban_mask": iban_mask,
}
