"""Template filters for payment messages, asserted byte for byte.

Babel follows CLDR: French groups thousands with U+202F (narrow no-break space) and puts
U+00A0 (no-break space) before the currency sign; German puts U+00A0 before it too. The
expected strings below spell these characters as escapes so that no editor can quietly
turn them into plain spaces.

Every filter runs the way deliveries use them: in the core's Templates (Jinja2 sandbox,
StrictUndefined), through the filters the core's plugin registers.
"""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from babel.numbers import format_currency, get_currency_symbol
from jinja2.exceptions import UndefinedError

from gateway import TemplateFailure, Templates
from gateway.filters import (
    _currency_spacing,
    card_mask,
    format_date,
    format_money,
    format_relative_days,
    iban_mask,
    resolve_locale,
)
from gateway.plugins import load_registry

NNBSP = "\u202f"  # narrow no-break space: French thousands separator
NBSP = "\u00a0"  # no-break space: before the currency sign in fr and de
BULLETS = "\u2022\u2022\u2022\u2022"


@pytest.fixture(scope="module")
def filters() -> dict[str, Any]:
    # The core's plugin only: what it registers is what every conf gets.
    return load_registry(autoload=False).filters


@pytest.fixture
def templates(tmp_path: Path, filters: dict[str, Any]) -> Templates:
    return Templates(tmp_path, "fr", filters)


def render(templates: Templates, source: str, **context: Any) -> str:
    return templates.from_string(source).render(context)


# -- registration --------------------------------------------------------------------------


def test_core_plugin_registers_every_filter(filters):
    assert {
        "json",
        "money",
        "date",
        "datetime",
        "time",
        "relative_days",
        "card_mask",
        "iban_mask",
    } <= set(filters)


def test_templates_expose_the_default_locale_and_time_zone(tmp_path, filters):
    templates = Templates(tmp_path, "de", filters)
    assert render(templates, "{{ default_locale }} {{ default_timezone }}") == "de Europe/Paris"


# -- money ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "amount", "currency", "expected"),
    [
        ("fr", 123450, "EUR", f"1{NNBSP}234,50{NBSP}€"),
        ("en", 123450, "EUR", "€1,234.50"),
        ("de", 123450, "EUR", f"1.234,50{NBSP}€"),
        ("fr", 1250, "EUR", f"12,50{NBSP}€"),
        ("fr", 5, "EUR", f"0,05{NBSP}€"),
        ("fr", 0, "EUR", f"0,00{NBSP}€"),
        ("fr", 123456789012, "EUR", f"1{NNBSP}234{NNBSP}567{NNBSP}890,12{NBSP}€"),
        # Negative amounts (refunds, chargebacks): CLDR's minus is a hyphen-minus here.
        ("fr", -123450, "EUR", f"-1{NNBSP}234,50{NBSP}€"),
        ("en", -123450, "EUR", "-€1,234.50"),
        ("de", -123450, "EUR", f"-1.234,50{NBSP}€"),
        # JPY has no minor unit: 1235 is 1,235 yen, never 12.35.
        ("fr", 1235, "JPY", f"1{NNBSP}235{NBSP}JPY"),
        ("en", 1235, "JPY", "¥1,235"),
        ("de", 1235, "JPY", f"1.235{NBSP}¥"),
        # KWD has three decimals: 1234 fils is 1.234 dinar.
        ("en", 1234, "KWD", "KWD\u00a01.234"),
        ("fr", 1234, "KWD", f"1,234{NBSP}KWD"),
        # IQD: ISO 4217 says 3 decimals where CLDR displays 0; the fils are kept.
        ("en", 1234, "IQD", "IQD\u00a01.234"),
        ("en", 123450, "USD", "$1,234.50"),
        ("fr", 123450, "USD", f"1{NNBSP}234,50{NBSP}$US"),
        ("en", 123450, "GBP", "£1,234.50"),
        ("fr", 123450, "CHF", f"1{NNBSP}234,50{NBSP}CHF"),
        # CLDR's currency spacing (which Babel skips, Tocsin adds): a code is never glued
        # to the digits, a sign is.
        ("en", 123450, "CHF", f"CHF{NBSP}1,234.50"),
        ("en", -123450, "CHF", f"-CHF{NBSP}1,234.50"),
    ],
)
def test_money_exact_bytes(templates, locale, amount, currency, expected):
    out = render(
        templates, "{{ amount | money(currency) }}", amount=amount, currency=currency, locale=locale
    )
    assert out == expected
    assert out.encode() == expected.encode()


def test_money_french_bytes_are_spelled_out():
    """The narrow no-break space is e2 80 af, the no-break space c2 a0, € e2 82 ac."""
    assert format_money(123450, "EUR", "fr").encode() == b"1\xe2\x80\xaf234,50\xc2\xa0\xe2\x82\xac"


def test_money_reads_the_locale_from_the_delivery_context(templates):
    # template_context sets `locale`: the rule's, the recipient's or the customer's.
    assert render(templates, "{{ 990 | money('EUR') }}", locale="en-GB") == "€9.90"
    assert render(templates, "{{ 990 | money('EUR') }}", locale="fr-BE") == f"9,90{NBSP}€"
    assert render(templates, "{{ 990 | money('EUR') }}", locale="fr_CH") == f"9,90{NBSP}€"


def test_money_falls_back_to_the_default_locale(tmp_path, filters):
    fr = Templates(tmp_path, "fr", filters)
    en = Templates(tmp_path, "en", filters)
    source = "{{ 123450 | money('EUR') }}"
    # No locale in the context, or None (a customer without one), or one Babel lacks.
    assert render(fr, source) == f"1{NNBSP}234,50{NBSP}€"
    assert render(fr, source, locale=None) == f"1{NNBSP}234,50{NBSP}€"
    assert render(en, source, locale=None) == "€1,234.50"
    assert render(en, source, locale="xx") == "€1,234.50"
    # An unknown region keeps the language: fr-XX -> fr.
    assert render(en, source, locale="fr-XX") == f"1{NNBSP}234,50{NBSP}€"


def test_a_template_can_set_its_own_locale(templates):
    source = "{% set locale = 'en' %}{{ 123450 | money('EUR') }}"
    assert render(templates, source, locale="fr") == "€1,234.50"


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (12.5, "money: amounts are integers in minor units (1250 = 12.50), got float 12.5"),
        (True, "got bool True"),
        ("1250", "got str '1250'"),
        (None, "got NoneType None"),
    ],
)
def test_money_refuses_what_is_not_integer_minor_units(templates, amount, message):
    with pytest.raises(TypeError, match="money: amounts are integers") as info:
        render(templates, "{{ amount | money('EUR') }}", amount=amount)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("currency", "message"),
    [
        ("eur", "money: currency must be an ISO 4217 code ('EUR'), got 'eur'"),
        ("EURO", "got 'EURO'"),
        ("EUX", "money: 'EUX' is not a currency with minor units"),
        ("XAU", "money: 'XAU' is not a currency with minor units"),
        (978, "got 978"),
    ],
)
def test_money_refuses_unknown_currencies(templates, currency, message):
    with pytest.raises(ValueError, match="money:") as info:
        render(templates, "{{ 100 | money(currency) }}", currency=currency)
    assert message in str(info.value)


def test_money_failure_names_the_template_file_and_line(tmp_path, filters):
    part = tmp_path / "receipt" / "fr" / "sms.j2"
    part.parent.mkdir(parents=True)
    part.write_text("Bonjour,\nvous avez payé {{ data.amount | money(data.currency) }}.\n")
    templates = Templates(tmp_path, "fr", filters)
    context = {"data": {"amount": 12.5, "currency": "EUR"}, "locale": "fr"}
    with pytest.raises(TemplateFailure) as info:
        templates.render("receipt", "sms", "fr", context)
    failure = info.value
    assert failure.template == "receipt/fr/sms.j2"
    assert failure.line == 2
    assert failure.detail == (
        "TypeError: money: amounts are integers in minor units (1250 = 12.50), got float 12.5"
    )
    assert str(failure).startswith("template receipt/fr/sms.j2, line 2: TypeError: money:")


def test_money_on_a_missing_field_says_what_is_missing(tmp_path, filters):
    part = tmp_path / "receipt" / "sms.j2"
    part.parent.mkdir(parents=True)
    part.write_text("{{ data.amount | money(data.currency) }}")
    templates = Templates(tmp_path, "fr", filters)
    with pytest.raises(TemplateFailure) as info:
        templates.render("receipt", "sms", "fr", {"data": {"currency": "EUR"}})
    assert info.value.line == 1
    assert "has no attribute 'amount'" in info.value.detail


def test_money_is_not_escaped_in_html_parts(tmp_path, filters):
    part = tmp_path / "receipt" / "fr" / "email.html.j2"
    part.parent.mkdir(parents=True)
    part.write_text("<p>{{ data.amount | money(data.currency) }} — {{ customer.name }}</p>")
    templates = Templates(tmp_path, "fr", filters)
    context = {"data": {"amount": 123450, "currency": "EUR"}, "customer": {"name": "A & B"}}
    out = templates.render("receipt", "email.html", "fr", context)
    assert out == f"<p>1{NNBSP}234,50{NBSP}€ — A &amp; B</p>"


# -- dates and times -----------------------------------------------------------------------

MOMENT = "2026-11-25T10:15:00Z"  # 11:15 in Paris (CET, UTC+1)


@pytest.mark.parametrize(
    ("locale", "source", "expected"),
    [
        ("fr", "{{ t | date }}", "25 novembre 2026"),
        ("en", "{{ t | date }}", "November 25, 2026"),
        ("de", "{{ t | date }}", "25. November 2026"),
        ("fr", "{{ t | date('full') }}", "mercredi 25 novembre 2026"),
        ("fr", "{{ t | date('medium') }}", "25 nov. 2026"),
        ("fr", "{{ t | date('short') }}", "25/11/2026"),
        ("en", "{{ t | date('short') }}", "11/25/26"),
        ("fr", "{{ t | date('EEEE d MMMM') }}", "mercredi 25 novembre"),
        ("fr", "{{ t | time }}", "11:15"),
        ("en", "{{ t | time }}", "11:15\u202fAM"),
        ("de", "{{ t | time }}", "11:15"),
        ("fr", "{{ t | datetime('short') }}", "25/11/2026 11:15"),
        ("fr", "{{ t | datetime }}", "25 nov. 2026, 11:15:00"),
        ("de", "{{ t | datetime }}", "25.11.2026, 11:15:00"),
    ],
)
def test_dates_exact_bytes(templates, locale, source, expected):
    assert render(templates, source, t=MOMENT, locale=locale) == expected


def test_dates_take_datetimes_dates_and_the_event_timestamp(templates):
    assert render(templates, "{{ t | date }}", t=datetime(2026, 11, 25, 10, 15, tzinfo=UTC)) == (
        "25 novembre 2026"
    )
    assert render(templates, "{{ t | date }}", t=date(2026, 12, 1)) == "1 décembre 2026"
    # A date alone is a calendar date: no time zone moves it.
    assert render(templates, "{{ '2026-12-01' | date(tz='Pacific/Kiritimati') }}") == (
        "1 décembre 2026"
    )
    assert render(templates, "{{ '2026-11-25T10:15:00+01:00' | time }}") == "10:15"


@pytest.mark.parametrize(
    ("moment", "paris", "utc"),
    [
        # Winter (CET, UTC+1): 22:30 UTC is 23:30 the same day in Paris.
        ("2026-01-15T22:30:00Z", "15 janvier 2026 23:30", "15 janvier 2026 22:30"),
        # Summer (CEST, UTC+2): 22:30 UTC is already the next day in Paris.
        ("2026-07-01T22:30:00Z", "2 juillet 2026 00:30", "1 juillet 2026 22:30"),
        # The spring-forward night (2026-03-29, 01:00 UTC): 02:00-03:00 never happens.
        ("2026-03-29T00:30:00Z", "29 mars 2026 01:30", "29 mars 2026 00:30"),
        ("2026-03-29T01:30:00Z", "29 mars 2026 03:30", "29 mars 2026 01:30"),
        # The fall-back night (2026-10-25, 01:00 UTC): 02:30 happens twice in Paris.
        ("2026-10-25T00:30:00Z", "25 octobre 2026 02:30", "25 octobre 2026 00:30"),
        ("2026-10-25T01:30:00Z", "25 octobre 2026 02:30", "25 octobre 2026 01:30"),
    ],
)
def test_dates_in_europe_paris_versus_utc_across_dst(templates, moment, paris, utc):
    source = "{{ t | date }} {{ t | time }}"
    assert render(templates, source, t=moment) == paris  # the default time zone
    assert render(templates, source, t=moment, timezone="Europe/Paris") == paris
    assert render(templates, source, t=moment, timezone="UTC") == utc
    utc_source = "{{ t | date(tz='UTC') }} {{ t | time(tz='UTC') }}"
    assert render(templates, utc_source, t=moment, timezone="Europe/Paris") == utc


def test_long_time_shows_the_offset_in_force(templates):
    assert render(templates, "{{ t | time('long') }}", t="2026-01-15T10:00:00Z") == (
        "11:00:00 +0100"
    )
    assert render(templates, "{{ t | time('long') }}", t="2026-07-15T10:00:00Z") == (
        "12:00:00 +0200"
    )


def test_recipient_time_zone_from_the_context(templates):
    source = "{{ t | datetime('short') }}"
    assert render(templates, source, t=MOMENT, timezone="America/New_York", locale="en") == (
        "11/25/26, 5:15\u202fAM"
    )


@pytest.mark.parametrize(
    ("source", "error", "message"),
    [
        ("{{ '2026-11-25T10:15:00' | date }}", ValueError, "has no time zone offset"),
        ("{{ '2026-11-25T10:15:00' | datetime }}", ValueError, "has no time zone offset"),
        ("{{ 'yesterday' | date }}", ValueError, "is not an ISO 8601 date-time"),
        ("{{ 1764065700 | datetime }}", TypeError, "expected an ISO 8601 string or a datetime"),
        ("{{ '2026-11-25' | time }}", ValueError, "is a date without a time"),
        ("{{ t | date(tz='Mars/Olympus') }}", ValueError, "unknown time zone 'Mars/Olympus'"),
        ("{{ t | date(format=3) }}", TypeError, "format must be one of short, medium"),
    ],
)
def test_date_errors(templates, source, error, message):
    with pytest.raises(error, match=message):
        render(templates, source, t=MOMENT)


def test_format_date_without_a_template():
    assert format_date(MOMENT, "long", "UTC", "en") == "November 25, 2026"


# -- relative days -------------------------------------------------------------------------

NOW = "2026-11-25T09:00:00+01:00"


@pytest.mark.parametrize(
    ("locale", "target", "expected"),
    [
        ("fr", "2026-11-28", "dans 3 jours"),
        ("fr", "2026-11-23", "il y a 2 jours"),
        ("fr", "2026-11-25", "aujourd\u2019hui"),
        ("fr", "2026-11-26", "dans 1 jour"),
        ("fr", "2027-01-09", "dans 45 jours"),  # always days: never "in 2 months"
        ("en", "2026-11-28", "in 3 days"),
        ("en", "2026-11-23", "2 days ago"),
        ("en", "2026-11-25", "today"),
        ("en", "2026-11-24", "1 day ago"),
        ("de", "2026-11-28", "in 3 Tagen"),
        ("de", "2026-11-25", "heute"),
        # A date-time counts by its calendar day in the time zone, not by 24-hour spans.
        ("fr", "2026-11-25T23:59:00+01:00", "aujourd\u2019hui"),
        ("fr", "2026-11-27T00:01:00+01:00", "dans 2 jours"),
    ],
)
def test_relative_days(templates, locale, target, expected):
    out = render(templates, "{{ d | relative_days }}", d=target, now=NOW, locale=locale)
    assert out == expected


def test_relative_days_counts_days_in_the_recipients_time_zone(templates):
    # 23:30 UTC on the 25th is already the 26th in Paris.
    now = datetime(2026, 11, 25, 23, 30, tzinfo=UTC)
    source = "{{ d | relative_days }}"
    assert render(templates, source, d="2026-11-26", now=now) == "aujourd\u2019hui"
    assert render(templates, source, d="2026-11-26", now=now, timezone="UTC") == "dans 1 jour"
    assert render(templates, "{{ d | relative_days(tz='UTC') }}", d="2026-11-26", now=now) == (
        "dans 1 jour"
    )


def test_relative_days_defaults_to_the_real_now(templates):
    today = datetime.now(UTC).astimezone().date()
    in_three = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    assert render(templates, "{{ d | relative_days(tz='UTC') }}", d=in_three) == "dans 3 jours"
    assert format_relative_days(today, tz=datetime.now().astimezone().tzinfo, locale="en") == (
        "today"
    )


# -- masks ---------------------------------------------------------------------------------


def test_card_mask(templates):
    assert render(
        templates, "{{ data.card.last4 | card_mask }}", data={"card": {"last4": "4242"}}
    ) == (f"{BULLETS} 4242")
    assert card_mask("4242").encode() == b"\xe2\x80\xa2" * 4 + b" 4242"
    assert card_mask("0042") == f"{BULLETS} 0042"
    # A full number never shows more than its last four digits.
    assert card_mask("4000 0566 5566 5556") == f"{BULLETS} 5556"


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (4242, TypeError),
        ("42", ValueError),
        ("42a2", ValueError),
        ("", ValueError),
        (None, TypeError),
    ],
)
def test_card_mask_refuses(value, error):
    with pytest.raises(error, match="card_mask"):
        card_mask(value)


@pytest.mark.parametrize(
    ("iban", "expected"),
    [
        ("FR7630006000011234567890189", f"FR76 {BULLETS} {BULLETS} 0189"),
        ("FR76 3000 6000 0112 3456 7890 189", f"FR76 {BULLETS} {BULLETS} 0189"),
        ("fr76 3000 6000 0112 3456 7890 189", f"FR76 {BULLETS} {BULLETS} 0189"),
        ("DE89 3704 0044 0532 0130 00", f"DE89 {BULLETS} {BULLETS} 3000"),
        ("GB29NWBK60161331926819", f"GB29 {BULLETS} {BULLETS} 6819"),
        ("BE68539007547034", f"BE68 {BULLETS} {BULLETS} 7034"),
    ],
)
def test_iban_mask(templates, iban, expected):
    assert render(templates, "{{ iban | iban_mask }}", iban=iban) == expected


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("FR7630006000011234567890188", ValueError),  # wrong check digits
        ("FR76 3000", ValueError),  # too short
        ("7630006000011234567890189", ValueError),  # no country
        ("FR76-3000-6000-0112-3456-7890-189", ValueError),
        (7630006000011234567890189, TypeError),
    ],
)
def test_iban_mask_refuses_what_is_not_an_iban(value, error):
    with pytest.raises(error, match="iban_mask") as info:
        iban_mask(value)
    assert "30006000011234567890" not in str(info.value)  # never echoes the account


# -- sandbox and locales -------------------------------------------------------------------


def test_filters_run_in_the_sandbox_with_strict_undefined(templates):
    assert type(templates.env).__name__ == "SandboxedEnvironment"
    source = (
        "{{ data.amount | money(data.currency) }}|{{ occurred_at | date }}|"
        "{{ data.card.last4 | card_mask }}|{{ data.iban | iban_mask }}|"
        "{{ data.due | relative_days }}"
    )
    context = {
        "data": {
            "amount": 125000,
            "currency": "EUR",
            "card": {"last4": "4242"},
            "iban": "FR7630006000011234567890189",
            "due": "2026-11-28",
        },
        "occurred_at": MOMENT,
        "locale": "fr-FR",
        "now": NOW,
    }
    assert render(templates, source, **context) == (
        f"1{NNBSP}250,00{NBSP}€|25 novembre 2026|{BULLETS} 4242|"
        f"FR76 {BULLETS} {BULLETS} 0189|dans 3 jours"
    )
    with pytest.raises(UndefinedError, match="'customer' is undefined"):
        render(templates, "{{ customer.iban | iban_mask }}")


def test_resolve_locale_follows_the_template_fallback():
    assert str(resolve_locale("fr-BE", "en")) == "fr_BE"
    assert str(resolve_locale("fr-XX", "en")) == "fr"
    assert str(resolve_locale("xx", "de")) == "de"
    assert str(resolve_locale(None, None)) == "en"


@pytest.mark.parametrize("locale", ["fr", "en", "de-CH", "ar", "ja"])
def test_money_remembered_results_are_babels_for_every_amount_and_currency(locale):
    """The money filter remembers its results: each call answers what Babel computes
    afresh, for currencies with 0, 2 and 3 decimals, negative amounts, in any order."""
    loc = resolve_locale(locale)
    for currency, exponent in (("JPY", 0), ("EUR", 2), ("CHF", 2), ("KWD", 3)):
        for amount in (0, 1, -5, 99, 100, 123456789, 1234, -1234550):
            for _ in range(2):  # the second answer comes from the cache
                got = format_money(amount, currency, locale)
                pattern = copy.copy(loc.currency_formats["standard"])
                pattern.frac_prec = (exponent, exponent)
                babel = format_currency(
                    Decimal(amount).scaleb(-exponent),
                    currency,
                    format=pattern,
                    locale=loc,
                    currency_digits=False,
                )
                want = _currency_spacing(babel, get_currency_symbol(currency, loc))
                assert got == want, (locale, currency, amount)
    with pytest.raises(ValueError, match="ISO 4217"):
        format_money(1, ["EUR"], locale)  # unhashable: the same precise error, no TypeError
