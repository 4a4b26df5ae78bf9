"""The sms channel: encoding and segments, numbers, sender IDs, each provider against a
stand-in speaking its documented wire format, the outbox, and one event end to end.

Nothing is mocked: channels are built from a conf by the real plan, providers are called
over real sockets, and the end-to-end test runs the real gateway on a real Redis.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from gateway_sms import InvalidNumber, SmsChannel, analyse, parse_sender, to_e164, transliterate
from gateway_sms.encoding import (
    GSM7,
    GSM7_BASIC,
    GSM7_BASIC_TABLE,
    GSM7_EXTENSION,
    GSM7_EXTENSION_TABLE,
    TRANSLITERATIONS,
    is_gsm7,
)
from gateway_sms.numbers import mask

from gateway import ConfError, Delivery, PermanentError, Recipient, TransientError
from gateway.redis_server import free_port

from .conftest import load_plan, make_event, write_conf
from .sms_standins import (
    TWILIO_SERVICE,
    TWILIO_SID,
    TWILIO_TOKEN,
    VONAGE_KEY,
    VONAGE_SECRET,
    Failure,
    TwilioStandIn,
    VonageStandIn,
)

ROOT = Path(__file__).resolve().parent.parent
UNUSED_REDIS = "redis://127.0.0.1:1/0"
FR_RECEIPT = "Votre paiement de 12,50 € a été reçu."

#: ``free`` renders the event's ``data.text`` as it is: tests choose the exact SMS text.
TEMPLATES = {
    "free/sms.j2": "{{ data.text }}\n",
    "receipt/fr/sms.j2": (
        "Votre paiement de {{ '%.2f' | format(data.amount / 100) | replace('.', ',') }} €"
        " a été reçu.\n"
    ),
    "receipt/en/sms.j2": "Your payment of €{{ '%.2f' | format(data.amount / 100) }} was received.",
    "email_only/email.subject.j2": "Subject",
}


# --- helpers ------------------------------------------------------------------------------


def sms_conf(tmp_path: Path, channel: str, *, template: str = "free") -> Path:
    """A conf with one sms channel ``sms`` (``channel`` is the rest of its table)."""
    rules = f"""
    [rules.texts]
    events = ["payment.*"]
    [[rules.texts.actions]]
    channel = "sms"
    template = "{template}"
    to = ["customer"]
    """
    extra = '\n[channels.sms]\ntype = "sms"\n' + textwrap.dedent(channel).strip() + "\n"
    return write_conf(
        tmp_path, redis_url=UNUSED_REDIS, rules=rules, extra=extra, templates=TEMPLATES
    )


def conf_problems(tmp_path: Path, channel: str, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfError) as caught:
        load_plan(sms_conf(tmp_path, channel, **kwargs))
    return caught.value.problems


def make_delivery(
    text: str = "Hello",
    *,
    phone: str | None = "+33612345678",
    address: str | None = None,
    template: str = "free",
    locale: str | None = "fr",
    delivery_id: str = "msg_0123456789abcdef01234567",
    **data: Any,
) -> Delivery:
    event = make_event(data={"amount": 1250, "currency": "EUR", "text": text, **data})
    recipient = (
        Recipient(kind="address", address=address)
        if address is not None
        else Recipient(kind="customer", phone=phone, locale=locale)
    )
    return Delivery(
        id=delivery_id,
        event_id=event["id"],
        event_type=event["type"],
        rule="texts",
        channel="sms",
        event=msgspec.Raw(json.dumps(event).encode()),
        template=template,
        locale=locale,
        recipient=recipient,
    )


MakeChannel = Callable[..., Any]


@pytest.fixture
async def make_channel(tmp_path: Path) -> AsyncIterator[MakeChannel]:
    """``await make_channel(toml)``: an sms channel built by the real plan, started."""
    started: list[SmsChannel] = []

    async def make(channel: str, folder: str = "conf") -> SmsChannel:
        plan = load_plan(sms_conf(tmp_path / folder, channel))
        sms = plan.channels["sms"]
        assert isinstance(sms, SmsChannel)
        await sms.start()
        started.append(sms)
        return sms

    yield make
    for sms in started:
        await sms.close()


def twilio_toml(standin: TwilioStandIn, *, token: str = TWILIO_TOKEN, more: str = "") -> str:
    return f"""
    provider = "twilio"
    sender = "MaBoutique"
    default_region = "FR"
    timeout = "5s"
    [channels.sms.twilio]
    account_sid = "{TWILIO_SID}"
    auth_token = "{token}"
    base_url = "{standin.base_url}"
    {more}
    """


def vonage_toml(
    standin: VonageStandIn, *, secret: str = VONAGE_SECRET, sender: str = "MaBoutique"
) -> str:
    return f"""
    provider = "vonage"
    sender = "{sender}"
    default_region = "FR"
    timeout = "5s"
    [channels.sms.vonage]
    api_key = "{VONAGE_KEY}"
    api_secret = "{secret}"
    base_url = "{standin.base_url}"
    """


# --- encoding: the GSM-7 tables ---------------------------------------------------------


def test_gsm7_tables_match_3gpp_ts_23_038():
    assert len(GSM7_BASIC_TABLE) == 128
    assert len(GSM7_BASIC) == 127  # 0x1B is the escape, not a character
    positions = {0x00: "@", 0x04: "è", 0x05: "é", 0x06: "ù", 0x07: "ì", 0x08: "ò", 0x09: "Ç"}
    positions |= {0x0A: "\n", 0x0D: "\r", 0x10: "Δ", 0x1E: "ß", 0x1F: "É", 0x24: "¤"}
    positions |= {0x40: "¡", 0x5B: "Ä", 0x5C: "Ö", 0x5D: "Ñ", 0x5E: "Ü", 0x5F: "§", 0x60: "¿"}
    positions |= {0x7B: "ä", 0x7C: "ö", 0x7D: "ñ", 0x7E: "ü", 0x7F: "à"}
    for code, char in positions.items():
        assert GSM7_BASIC_TABLE[code] == char, hex(code)
    assert set("\f^{}\\[~]|€") == GSM7_EXTENSION
    assert GSM7_EXTENSION_TABLE[0x65] == "€"


def test_french_accents_in_and_out_of_gsm7():
    for ch in "éèàùìòÉÇÄÖÑÜßäöñüÅåØøÆæ":
        assert ch in GSM7_BASIC, ch
    # lower-case ç is NOT in the basic table (only Ç is), nor the circumflexes, ë, ï, œ
    for ch in "çêâîôûëïœÀÈÊÂÎÔÛŒ\u00a0\u202f\u2019«»…":
        assert ch not in GSM7, ch


# --- encoding: counting -----------------------------------------------------------------


def test_french_receipt_with_lowercase_c_cedilla_is_ucs2():
    m = analyse(FR_RECEIPT)
    assert (m.encoding, m.units, m.segments, m.non_gsm) == ("UCS-2", 37, 1, ("ç",))
    assert m.text == FR_RECEIPT and not m.transliterated


def test_french_receipt_transliterated_stays_gsm7_with_euro_counting_two():
    m = analyse(FR_RECEIPT, transliterate_text=True)
    assert m.text == "Votre paiement de 12,50 € a été recu."  # é kept: it is GSM-7
    assert (m.encoding, m.units, m.segments, m.transliterated) == ("GSM-7", 38, 1, True)


def test_french_without_c_cedilla_is_gsm7_and_euro_counts_two():
    text = "Votre paiement de 12,50 € a été enregistré. Merci !"
    m = analyse(text)
    assert len(text) == 51
    assert (m.encoding, m.units, m.segments) == ("GSM-7", 52, 1)


def test_english_receipt():
    text = "Your payment of €12.50 was received. Thank you!"
    m = analyse(text)
    assert (m.encoding, m.units, m.segments) == ("GSM-7", 48, 1)
    assert analyse("[ref] {x} ~y~ a|b ^ \\").units == 21 + 9  # [ ] { } ~ ~ | ^ \ count two


def test_every_extension_character_counts_two():
    for ch in "\f^{}\\[~]|€":
        assert analyse(ch).units == 2, repr(ch)
    assert analyse("€" * 80).segments == 1  # 160 septets
    assert analyse("€" * 81).segments == 2  # 162 septets -> 153 + 9: one € per pair


def test_circumflex_makes_ucs2_unless_transliterated():
    m = analyse("Votre fenêtre de paiement")
    assert (m.encoding, m.non_gsm) == ("UCS-2", ("ê",))
    t = analyse("Votre fenêtre de paiement", transliterate_text=True)
    assert (t.encoding, t.text) == ("GSM-7", "Votre fenetre de paiement")


@pytest.mark.parametrize(
    ("length", "segments"), [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)]
)
def test_gsm7_boundaries(length, segments):
    m = analyse("a" * length)
    assert (m.encoding, m.units, m.segments) == ("GSM-7", length, segments)


@pytest.mark.parametrize(
    ("length", "segments"), [(70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)]
)
def test_ucs2_boundaries(length, segments):
    m = analyse("ê" * length)
    assert (m.encoding, m.units, m.segments) == ("UCS-2", length, segments)


def test_extension_character_at_the_153_boundary_moves_to_the_next_segment():
    # 306 septets either way; ceil(306 / 153) == 2, but an ESC pair is never split:
    fits = "a" * 151 + "€" + "a" * 153  # € ends segment 1 exactly (151 + 2 = 153)
    straddles = "a" * 152 + "€" + "a" * 152  # € would straddle 153/154: it moves on
    assert (analyse(fits).units, analyse(fits).segments) == (306, 2)
    assert (analyse(straddles).units, analyse(straddles).segments) == (306, 3)
    # alone, under 160 septets, nothing is split at all
    assert analyse("a" * 158 + "€").segments == 1
    assert analyse("a" * 159 + "€").segments == 2


def test_emoji_count_two_units_and_are_not_split():
    assert (analyse("😀" * 35).units, analyse("😀" * 35).segments) == (70, 1)
    assert analyse("x" * 67 + "😀" + "x" * 65).segments == 2  # 67 | 2 + 65
    assert analyse("x" * 66 + "😀" + "x" * 66).segments == 3  # pair would straddle 67/68


def test_transliteration_keeps_gsm7_characters_and_fixes_typography():
    text = "Fenêtre, reçu, cœur, « ok », l\u2019été… 12\u202f345,00\u00a0€ — Où ? Ça !"
    assert transliterate(text) == 'Fenetre, recu, coeur, " ok ", l\'été... 12 345,00 € - Où ? Ça !'
    assert transliterate("ÀÊÎÔÛŒ") == "AEIOUOE"
    assert transliterate("•••• 4242") == "**** 4242"


def test_no_break_spaces_from_number_formatting_never_force_ucs2():
    # What CLDR's French money formatting gives: U+202F between thousands, U+00A0 before €
    text = "Paiement de 1\u202f234,50\u00a0€ reçu"
    m = analyse(text.replace("reçu", "enregistré"))
    assert (m.encoding, m.text, m.units, m.transliterated) == (
        "GSM-7",
        "Paiement de 1 234,50 € enregistré",
        34,
        False,
    )
    # ...and when the text is UCS-2 anyway, they are still sent as plain spaces
    assert analyse(text).text == "Paiement de 1 234,50 € reçu"
    assert analyse("a\u200bb\ufeff").text == "ab"


def test_transliteration_is_not_used_when_the_text_stays_ucs2():
    m = analyse("Fenêtre 😀", transliterate_text=True)
    assert (m.encoding, m.text, m.transliterated) == ("UCS-2", "Fenêtre 😀", False)
    assert m.non_gsm == ("ê", "😀")


def test_transliteration_table_only_maps_non_gsm_to_gsm():
    assert not [k for k in TRANSLITERATIONS if k in GSM7]
    assert all(is_gsm7(v) for v in TRANSLITERATIONS.values())


# --- numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("06 12 34 56 78", "FR", "+33612345678"),
        ("06.12.34.56.78", "FR", "+33612345678"),
        ("+33 6 12 34 56 78", None, "+33612345678"),
        ("0033612345678", "FR", "+33612345678"),
        ("0470 12 34 56", "BE", "+32470123456"),
        ("+49 151 12345678", "FR", "+4915112345678"),
    ],
)
def test_numbers_normalised_to_e164(raw, region, expected):
    assert to_e164(raw, region) == expected


def test_invalid_numbers_fail_for_good_with_a_masked_reason():
    with pytest.raises(InvalidNumber) as caught:
        to_e164("06 12", "FR")
    assert isinstance(caught.value, PermanentError)
    assert "not a valid number" in caught.value.reason

    with pytest.raises(InvalidNumber, match="no such number range"):
        to_e164("+33 7 00 00 00 00", "FR")
    with pytest.raises(InvalidNumber, match="not a phone number"):
        to_e164("call me", "FR")
    with pytest.raises(InvalidNumber, match="default_region") as caught:
        to_e164("06 12 34 56 78", None)
    assert "06 12 34 56 78" not in caught.value.reason and "78" in caught.value.reason


def test_landlines_refused_unless_allowed():
    with pytest.raises(InvalidNumber, match="fixed line"):
        to_e164("01 23 45 67 89", "FR")
    with pytest.raises(InvalidNumber, match="toll-free"):
        to_e164("0800 123 456", "FR")
    assert to_e164("01 23 45 67 89", "FR", refuse_landlines=False) == "+33123456789"


def test_mask():
    assert mask("+33612345678") == "+33•••••••78"
    assert mask("06 12 34 56 78") == "06 •• •• •• 78"


# --- sender IDs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kind", "value"),
    [
        ("MaBoutique", "alphanumeric", "MaBoutique"),
        ("A", "alphanumeric", "A"),
        ("ABCDEFGHIJK", "alphanumeric", "ABCDEFGHIJK"),
        ("Shop 24", "alphanumeric", "Shop 24"),
        ("24h Shop", "alphanumeric", "24h Shop"),
        ("+33612345678", "number", "+33612345678"),
        ("+33 7 57 00 00 01", "number", "+33757000001"),
    ],
)
def test_valid_senders(raw, kind, value):
    sender = parse_sender(raw)
    assert (sender.kind, sender.value) == (kind, value)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        ("ABCDEFGHIJKL", "12 characters long"),
        ("123456", "no letter"),
        ("0612345678", "no letter"),
        ("Ma-Boutique", "only A-Z"),
        ("Boutiqué", "only A-Z"),
        (" Shop", "start or end"),
        ("+3361234", "not a valid E.164"),
        ("+33 1", "not a valid E.164"),
    ],
)
def test_invalid_senders(raw, why):
    with pytest.raises(ValueError, match=why):
        parse_sender(raw)


# --- conf ---------------------------------------------------------------------------------


def test_conf_problems_are_all_reported(tmp_path):
    problems = conf_problems(
        tmp_path,
        """
        provider = "twilio"
        sender = "Ma-Boutique"
        default_region = "XX"
        [channels.sms.twilio]
        account_sid = "nope"
        auth_token = "t"
        [channels.sms.vonage]
        api_key = "k"
        api_secret = "s"
        """,
    )
    [problem] = [p for p in problems if "channels.sms:" in p]
    assert "vonage: options given, but provider is 'twilio'" in problem
    assert "twilio.account_sid: expected AC" in problem
    assert "sender: 'Ma-Boutique': an alphanumeric sender ID uses only" in problem
    assert "default_region: 'XX'" in problem


def test_conf_provider_needs_its_table_and_a_sender(tmp_path):
    [problem] = [p for p in conf_problems(tmp_path, 'provider = "twilio"') if "channels.sms" in p]
    assert "sender: required" in problem and "messaging_service_sid" in problem
    assert "provider 'twilio' needs a [channels.NAME.twilio] table" in problem


def test_conf_field_types_and_unknown_fields(tmp_path):
    problems = conf_problems(tmp_path / "a", 'sender = "Shop"\nmax_segments = 0')
    assert any("channels.sms.max_segments" in p and ">= 1" in p for p in problems), problems
    problems = conf_problems(tmp_path / "b", 'sendr = "Shop"')
    assert any("unknown field `sendr`" in p for p in problems), problems
    problems = conf_problems(tmp_path / "c", 'sender = "Shop"\nprovider = "sendgrid"')
    assert any("channels.sms.provider" in p for p in problems), problems


def test_check_action_reports_a_missing_sms_part(tmp_path):
    problems = conf_problems(tmp_path, 'sender = "Shop"', template="email_only")
    assert any(
        "rules.texts.actions[0]: template: 'email_only' has no sms.j2" in p for p in problems
    ), problems


def test_twilio_secret_is_never_echoed(tmp_path):
    problems = conf_problems(
        tmp_path,
        """
        provider = "twilio"
        sender = "!!"
        [channels.sms.twilio]
        account_sid = "AC0123"
        auth_token = "canary-token-never-shown"
        """,
    )
    assert not any("canary" in p for p in problems)


# --- composing and previewing -------------------------------------------------------------


async def test_preview_shows_what_would_be_sent(make_channel):
    sms = await make_channel('sender = "MaBoutique"\ndefault_region = "FR"')
    preview = sms.preview(make_delivery(template="receipt"))
    assert preview == {
        "provider": f"outbox ({sms.context.data_dir / 'outbox' / 'sms.jsonl'})",
        "to": "+33612345678",
        "from": "MaBoutique",
        "sms": FR_RECEIPT,
        "encoding": "UCS-2",
        "segments": "1",
        "units": "37",
        "transliterated": "no",
        "ucs2_because_of": "ç",
    }
    english = sms.preview(make_delivery(template="receipt", locale="en"))
    assert (english["sms"], english["encoding"], english["units"]) == (
        "Your payment of €12.50 was received.",
        "GSM-7",
        "37",
    )


async def test_preview_with_transliteration(make_channel):
    sms = await make_channel('sender = "MaBoutique"\ntransliterate = true')
    preview = sms.preview(make_delivery(template="receipt"))
    assert (preview["sms"], preview["encoding"], preview["units"]) == (
        "Votre paiement de 12,50 € a été recu.",
        "GSM-7",
        "38",
    )
    assert preview["transliterated"] == "yes"


async def test_shipped_sample_templates_stay_in_one_gsm7_segment(tmp_path):
    conf = tmp_path / "tocsin.toml"
    conf.write_text(
        (ROOT / "conf" / "tocsin.toml").read_text()
        + textwrap.dedent(
            """
            [channels.sms]
            type = "sms"
            sender = "MaBoutique"
            """
        )
    )
    (tmp_path / "templates").symlink_to(ROOT / "conf" / "templates")
    sms = load_plan(conf).channels["sms"]
    event = (ROOT / "conf" / "examples" / "payment_succeeded.json").read_bytes()
    expected = {
        "fr-FR": "Paiement de 1 250,00 € bien enregistré (facture FA-2026-0042). Merci !",
        "en": "Payment of €1,250.00 received (invoice FA-2026-0042). Thank you!",
    }
    for locale, text in expected.items():
        delivery = Delivery(
            id="msg_sample",
            event_id="evt_demo_0001",
            event_type="payment.succeeded",
            rule="receipt",
            channel="sms",
            event=msgspec.Raw(event),
            template="payment_receipt",
            locale=locale,
            recipient=Recipient(kind="customer", phone="+33612345678"),
        )
        preview = sms.preview(delivery)
        assert (preview["sms"], preview["encoding"], preview["segments"]) == (text, "GSM-7", "1")


async def test_too_many_segments_fail_loudly_never_truncated(make_channel):
    sms = await make_channel('sender = "Shop"')
    with pytest.raises(PermanentError) as caught:
        sms.compose(make_delivery("a" * 460))
    assert caught.value.reason == (
        "message needs 4 segments (GSM-7, 460 septets) but max_segments is 3: "
        "not sent (never truncated)"
    )
    assert sms.compose(make_delivery("a" * 459)).sms.segments == 3

    with pytest.raises(PermanentError) as caught:
        sms.compose(make_delivery("reçu " * 41))  # stripped: 204 UTF-16 units > 3 x 67
    assert caught.value.reason.startswith(
        "message needs 4 segments (UCS-2, 204 UTF-16 units) but max_segments is 3"
    )
    assert "UCS-2 because of 'ç'" in caught.value.reason
    assert "transliterate = true may keep it in GSM-7" in caught.value.reason


async def test_max_segments_is_configurable(make_channel):
    sms = await make_channel('sender = "Shop"\nmax_segments = 1')
    with pytest.raises(PermanentError, match="needs 2 segments"):
        sms.compose(make_delivery("a" * 161))


async def test_recipient_numbers(make_channel):
    sms = await make_channel('sender = "Shop"\ndefault_region = "FR"')
    assert sms.compose(make_delivery(address="06 12 34 56 78")).sms.to == "+33612345678"
    with pytest.raises(InvalidNumber, match="the event's customer has no phone"):
        sms.compose(make_delivery(phone=None))
    with pytest.raises(InvalidNumber, match="not a valid number"):
        sms.compose(make_delivery(address="06 12"))


async def test_template_failures_and_empty_messages(make_channel):
    sms = await make_channel('sender = "Shop"')
    with pytest.raises(PermanentError, match="rendered an empty message"):
        sms.compose(make_delivery("   \n "))
    with pytest.raises(PermanentError, match=r"no sms\.j2"):
        sms.compose(make_delivery(template="email_only"))


# --- outbox -------------------------------------------------------------------------------


async def test_outbox_appends_one_json_line_per_message(make_channel):
    sms = await make_channel('sender = "MaBoutique"\ndefault_region = "FR"')
    first = make_delivery(template="receipt", delivery_id="msg_first")
    second = make_delivery("Rappel : facture FA-1 [échue]", delivery_id="msg_second")
    accepted = await sms.send_sms(first)
    assert (accepted.provider, accepted.message_ids) == ("outbox", ("msg_first",))
    await sms.send(second)

    lines = (sms.context.data_dir / "outbox" / "sms.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for record in records:
        assert record.pop("at").endswith("Z")
    assert records == [
        {
            "channel": "sms",
            "delivery_id": "msg_first",
            "message_id": "msg_first",
            "to": "+33612345678",
            "from": "MaBoutique",
            "text": FR_RECEIPT,
            "encoding": "UCS-2",
            "segments": 1,
        },
        {
            "channel": "sms",
            "delivery_id": "msg_second",
            "message_id": "msg_second",
            "to": "+33612345678",
            "from": "MaBoutique",
            "text": "Rappel : facture FA-1 [échue]",
            "encoding": "GSM-7",
            "segments": 1,
        },
    ]


async def test_outbox_that_cannot_be_written_is_retried(make_channel, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the outbox folder should be")
    sms = await make_channel(
        f'sender = "Shop"\n[channels.sms.outbox]\npath = "{blocker}/sms.jsonl"'
    )
    with pytest.raises(TransientError, match="cannot append"):
        await sms.send(make_delivery())


# --- Twilio -------------------------------------------------------------------------------


async def test_twilio_accepts_a_message(make_channel, twilio):
    sms = await make_channel(twilio_toml(twilio))
    accepted = await sms.send_sms(make_delivery(template="receipt"))

    [message] = twilio.accepted
    assert accepted.provider == "twilio"
    assert accepted.message_ids == (message["sid"],) and message["sid"].startswith("SM")
    assert accepted.status == "queued"
    assert {k: v for k, v in message.items() if k != "sid"} == {
        "To": "+33612345678",
        "From": "MaBoutique",
        "Body": FR_RECEIPT,
    }
    [request] = twilio.requests
    assert request["path"] == f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
    assert request["content_type"] == "application/x-www-form-urlencoded"
    expected_auth = base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
    assert request["headers"]["Authorization"] == f"Basic {expected_auth}"


async def test_twilio_messaging_service_and_status_callback(make_channel, twilio):
    toml = f"""
    provider = "twilio"
    [channels.sms.twilio]
    account_sid = "{TWILIO_SID}"
    auth_token = "{TWILIO_TOKEN}"
    messaging_service_sid = "{TWILIO_SERVICE}"
    status_callback = "https://hooks.example.com/twilio/status?source=tocsin"
    base_url = "{twilio.base_url}"
    """
    sms = await make_channel(toml)
    accepted = await sms.send_sms(make_delivery("Hello", delivery_id="msg_cb"))
    [message] = twilio.accepted
    assert accepted.status == "accepted"
    assert "From" not in message
    assert message["MessagingServiceSid"] == TWILIO_SERVICE
    assert message["StatusCallback"] == (
        "https://hooks.example.com/twilio/status?source=tocsin&delivery=msg_cb"
    )


async def test_twilio_bad_auth_is_permanent_and_secret_free(make_channel, twilio):
    sms = await make_channel(twilio_toml(twilio, token="wrong-token-canary"))
    with pytest.raises(PermanentError) as caught:
        await sms.send(make_delivery())
    assert caught.value.status == 401
    assert (
        "20003" in caught.value.reason and "check account_sid and auth_token" in caught.value.reason
    )
    assert "canary" not in caught.value.reason
    assert twilio.accepted == []


async def test_twilio_invalid_number_is_permanent(make_channel, twilio):
    twilio.invalid_numbers.add("+33699999999")
    sms = await make_channel(twilio_toml(twilio))
    with pytest.raises(PermanentError) as caught:
        await sms.send(make_delivery(phone="+33699999999"))
    assert caught.value.status == 400
    assert caught.value.reason == (
        "twilio: HTTP 400, invalid recipient number ('To') "
        "(21211: The 'To' number +33699999999 is not a valid phone number.)"
    )


@pytest.mark.parametrize(
    ("to", "code", "meaning"),
    [
        ("+15005550001", 21211, "invalid recipient number"),
        ("+15005550002", 21612, "cannot route"),
        ("+15005550003", 21408, "no permission to send to this region"),
        ("+15005550004", 21610, "recipient unsubscribed"),
        ("+15005550009", 21614, "not a mobile number"),
    ],
)
async def test_twilio_recipient_errors_are_permanent(make_channel, twilio, to, code, meaning):
    sms = await make_channel(twilio_toml(twilio))
    with pytest.raises(PermanentError) as caught:
        await sms.send(make_delivery(address=to))
    assert not isinstance(caught.value, TransientError)
    assert f"({code}: " in caught.value.reason and meaning in caught.value.reason


@pytest.mark.parametrize(
    ("sender", "code", "error"),
    [
        ("+15005550001", 21212, PermanentError),
        ("+15005550007", 21606, PermanentError),
        ("+33612345678", 21606, PermanentError),  # valid number, not one of the account's
        ("+15005550008", 21611, TransientError),  # the sender's queue is full: later
    ],
)
async def test_twilio_sender_errors(make_channel, twilio, sender, code, error):
    sms = await make_channel(twilio_toml(twilio).replace('"MaBoutique"', f'"{sender}"'))
    with pytest.raises(error) as caught:
        await sms.send(make_delivery())
    assert f"({code}: " in caught.value.reason


async def test_twilio_number_sender_owned_by_the_account(make_channel, twilio):
    sms = await make_channel(twilio_toml(twilio).replace('"MaBoutique"', '"+33 7 57 00 00 01"'))
    await sms.send(make_delivery())
    assert twilio.accepted[0]["From"] == "+33757000001"


async def test_twilio_429_honours_retry_after(make_channel, twilio):
    body = {"code": 20429, "message": "Too Many Requests", "status": 429}
    twilio.fail_next.append(Failure(429, body, {"Retry-After": "7"}))
    sms = await make_channel(twilio_toml(twilio))
    with pytest.raises(TransientError) as caught:
        await sms.send(make_delivery())
    assert (caught.value.status, caught.value.retry_after) == (429, 7.0)
    assert "too many requests" in caught.value.reason
    await sms.send(make_delivery())  # the next try goes through
    assert len(twilio.accepted) == 1


async def test_twilio_500_is_transient(make_channel, twilio):
    body = {"code": 20500, "message": "An internal server error has occurred", "status": 500}
    twilio.fail_next.append(Failure(500, body))
    sms = await make_channel(twilio_toml(twilio))
    with pytest.raises(TransientError) as caught:
        await sms.send(make_delivery())
    assert (caught.value.status, caught.value.retry_after) == (500, None)
    assert "20500" in caught.value.reason


async def test_twilio_redirect_is_not_followed(make_channel, twilio):
    twilio.fail_next.append(Failure(307, None, {"Location": "https://elsewhere.example/"}))
    sms = await make_channel(twilio_toml(twilio))
    with pytest.raises(
        PermanentError, match=re.escape("redirect to https://elsewhere.example/ not followed")
    ):
        await sms.send(make_delivery())
    assert len(twilio.requests) == 1


async def test_twilio_timeout_and_connection_refused_are_transient(make_channel, twilio):
    twilio.hold = asyncio.Event()
    sms = await make_channel(twilio_toml(twilio).replace('timeout = "5s"', 'timeout = "0.2s"'))
    with pytest.raises(TransientError, match=re.escape("no answer within 0.2s")):
        await sms.send(make_delivery())
    twilio.hold.set()

    closed = TwilioStandIn(port=free_port())  # never started: nothing listens there
    sms = await make_channel(twilio_toml(closed), folder="closed")
    with pytest.raises(TransientError, match="twilio: ClientConnectorError"):
        await sms.send(make_delivery())


async def test_provider_on_a_private_address_is_refused_by_the_ssrf_guard(tmp_path, twilio):
    conf = sms_conf(tmp_path, twilio_toml(twilio))
    text = conf.read_text().replace('allow = ["127.0.0.0/8"]', "allow = []")
    # The unused json_hook's loopback URL would be refused at check time, before the SMS.
    conf.write_text(text.replace("http://127.0.0.1:9/unused", "http://hooks.example.invalid/"))
    sms = load_plan(conf).channels["sms"]
    await sms.start()
    try:
        with pytest.raises(
            PermanentError, match=re.escape("twilio: refused to connect to 127.0.0.1")
        ):
            await sms.send(make_delivery())
    finally:
        await sms.close()
    assert twilio.requests == []


async def test_twilio_standin_refuses_what_twilio_refuses(twilio):
    url = f"{twilio.base_url}/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
    token = base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
    auth = {"Authorization": f"Basic {token}"}
    async with aiohttp.ClientSession() as session:

        async def post(**kwargs: Any) -> tuple[int, Any]:
            async with session.post(url, **kwargs) as response:
                return response.status, await response.json()

        # JSON instead of a form: Twilio reads no parameter at all
        status, body = await post(headers=auth, json={"To": "+33612345678", "Body": "x"})
        assert (status, body["code"]) == (400, 21604)
        status, body = await post(headers=auth, data={"To": "+33612345678", "From": "Shop"})
        assert (status, body["code"], body["message"]) == (400, 21602, "Message body is required.")
        status, body = await post(headers=auth, data={"To": "+33612345678", "Body": "x"})
        assert (status, body["code"]) == (400, 21603)
        status, body = await post(headers=auth, data={"To": "0612345678", "From": "S", "Body": "x"})
        assert (status, body["code"]) == (400, 21211)
        status, body = await post(data={"To": "+33612345678", "From": "Shop", "Body": "x"})
        assert (status, body) == (
            401,
            {
                "code": 20003,
                "message": "Authenticate",
                "more_info": "https://www.twilio.com/docs/errors/20003",
                "status": 401,
            },
        )
        long_body = {"To": "+33612345678", "From": "Shop", "Body": "x" * 1601}
        status, body = await post(headers=auth, data=long_body)
        assert (status, body["code"]) == (400, 21617)
    assert twilio.accepted == []


# --- Vonage -------------------------------------------------------------------------------


async def test_vonage_accepts_a_gsm7_message(make_channel, vonage):
    sms = await make_channel(vonage_toml(vonage))
    delivery = make_delivery(template="receipt", locale="en")
    accepted = await sms.send_sms(delivery)

    [message] = vonage.accepted
    assert accepted.provider == "vonage" and accepted.status == "accepted"
    assert accepted.message_ids == tuple(message.pop("message-ids"))
    assert len(accepted.message_ids) == 1
    assert message == {
        "api_key": VONAGE_KEY,
        "from": "MaBoutique",
        "to": "33612345678",
        "text": "Your payment of €12.50 was received.",
        "type": "text",
        "client-ref": delivery.id,
        "garbled": False,
    }
    assert vonage.requests[0]["content_type"] == "application/x-www-form-urlencoded"


async def test_vonage_ucs2_message_is_sent_as_unicode_with_one_id_per_segment(make_channel, vonage):
    sms = await make_channel(vonage_toml(vonage, sender="+33 7 57 00 00 01"))
    text = "Votre paiement a été reçu, merci ! " * 2  # 70 UTF-16 units, then one more char
    accepted = await sms.send_sms(make_delivery(text.strip() + " ✓"))
    [message] = vonage.accepted
    assert (message["type"], message["from"], message["garbled"]) == (
        "unicode",
        "33757000001",
        False,
    )
    assert len(accepted.message_ids) == 2


async def test_vonage_bad_credentials_are_permanent_and_secret_free(make_channel, vonage):
    sms = await make_channel(vonage_toml(vonage, secret="wrong-secret-canary"))
    with pytest.raises(PermanentError) as caught:
        await sms.send(make_delivery())
    assert caught.value.reason == (
        "vonage: invalid credentials: check api_key and api_secret (status 4: Bad Credentials)"
    )
    assert "canary" not in caught.value.reason
    assert not isinstance(caught.value, TransientError)


@pytest.mark.parametrize(
    ("setup", "status", "meaning"),
    [
        (lambda v: v.unroutable.add("33699999999"), "6", "cannot route it"),
        (lambda v: v.barred.add("33699999999"), "7", "recipient number barred"),
        (lambda v: setattr(v, "allowed_senders", {"Other"}), "15", "invalid sender address"),
    ],
)
async def test_vonage_number_and_sender_refusals_are_permanent(
    make_channel, vonage, setup, status, meaning
):
    setup(vonage)
    sms = await make_channel(vonage_toml(vonage))
    with pytest.raises(PermanentError) as caught:
        await sms.send(make_delivery(phone="+33699999999"))
    assert not isinstance(caught.value, TransientError)
    assert meaning in caught.value.reason and f"(status {status}: " in caught.value.reason


async def test_vonage_throttling_is_transient(make_channel, vonage):
    throttled = {"message-count": "1", "messages": [{"status": "1", "error-text": "Throttled"}]}
    vonage.fail_next.append(Failure(200, throttled))
    sms = await make_channel(vonage_toml(vonage))
    with pytest.raises(TransientError) as caught:
        await sms.send(make_delivery())
    assert caught.value.retry_after == 1.0 and "throttled" in caught.value.reason


async def test_vonage_429_honours_retry_after(make_channel, vonage):
    vonage.fail_next.append(Failure(429, {"title": "Too Many Requests"}, {"Retry-After": "30"}))
    sms = await make_channel(vonage_toml(vonage))
    with pytest.raises(TransientError) as caught:
        await sms.send(make_delivery())
    assert (caught.value.status, caught.value.retry_after) == (429, 30.0)


async def test_vonage_500_is_transient(make_channel, vonage):
    vonage.fail_next.append(Failure(500, None))
    sms = await make_channel(vonage_toml(vonage))
    with pytest.raises(TransientError) as caught:
        await sms.send(make_delivery())
    assert caught.value.status == 500


async def test_vonage_partly_accepted_message_is_not_retried(make_channel, vonage):
    answer = {
        "message-count": "2",
        "messages": [
            {"status": "0", "message-id": "0A0000001", "to": "33612345678"},
            {"status": "1", "error-text": "Throttled"},
        ],
    }
    vonage.fail_next.append(Failure(200, answer))
    sms = await make_channel(vonage_toml(vonage))
    with pytest.raises(PermanentError) as caught:
        await sms.send(make_delivery("a" * 200))
    assert not isinstance(caught.value, TransientError)
    assert "1 of 2 segments accepted" in caught.value.reason


async def test_vonage_unreadable_200_is_not_retried(make_channel, vonage):
    vonage.fail_next.append(Failure(200, {"unexpected": True}))
    sms = await make_channel(vonage_toml(vonage))
    with pytest.raises(PermanentError, match="may have been sent"):
        await sms.send(make_delivery())


async def test_vonage_standin_refuses_what_vonage_refuses(vonage):
    url = f"{vonage.base_url}/sms/json"
    good = {"api_key": VONAGE_KEY, "api_secret": VONAGE_SECRET, "from": "Shop", "text": "x"}
    async with aiohttp.ClientSession() as session:

        async def post(**kwargs: Any) -> dict[str, Any]:
            async with session.post(url, **kwargs) as response:
                assert response.status == 200  # always, even for errors
                return await response.json()  # type: ignore[no-any-return]

        body = await post(data="api_key=x", headers={"Content-Type": "text/plain"})
        assert body["messages"][0] == {"status": "2", "error-text": "Missing api_key"}
        body = await post(data=good)
        assert body["messages"][0] == {"status": "2", "error-text": "Missing to param"}
        body = await post(data={**good, "to": "+33612345678"})
        assert body["messages"][0]["status"] == "3"
        body = await post(data={**good, "to": "33612345678", "from": "Ma-Boutique!"})
        assert body["messages"][0]["status"] == "15"
        # JSON bodies are accepted too
        body = await post(json={**good, "to": "33612345678"})
        assert body["message-count"] == "1" and body["messages"][0]["status"] == "0"
    assert len(vonage.accepted) == 1


# --- end to end ---------------------------------------------------------------------------


async def test_event_becomes_an_sms_accepted_by_twilio(tmp_path, redis_url, start_gateway, twilio):
    rules = """
    [rules.receipt-sms]
    events = ["payment.succeeded"]
    [[rules.receipt-sms.actions]]
    channel = "sms"
    template = "receipt"
    to = ["customer"]
    """
    extra = '\n[channels.sms]\ntype = "sms"\n' + textwrap.dedent(twilio_toml(twilio)).strip()
    conf = write_conf(tmp_path, redis_url=redis_url, rules=rules, extra=extra, templates=TEMPLATES)
    gw = await start_gateway(conf)
    event = make_event(
        customer={"id": "cus_1", "phone": "+33612345678", "locale": "fr-FR", "kind": "b2c"},
        data={"amount": 1250, "currency": "EUR"},
    )
    status, _ = await gw.post(event)
    assert status == 202

    [message] = await twilio.wait_for(1)
    assert message["To"] == "+33612345678"
    assert message["From"] == "MaBoutique"
    assert message["Body"] == FR_RECEIPT
