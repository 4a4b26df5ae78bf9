"""What the email channel sends is what the plain, obvious code would send, byte for byte.

``Email.send`` renders through cached template lookups and writes the MIME bytes itself
(``MessageWriter``) because the stdlib's header objects cost more than the templates
(issue #15). These tests hold it to the straightforward path: find and render each part
with ``Templates.render``, inline the CSS with a fresh css-inline call, build an
``EmailMessage`` and flatten it with ``policy=SMTP``. Every shipped notification with
email parts, for every shipped sample event that reaches it, in fr, en and locales that
fall back (fr-BE, de, none); then header values chosen to hit every branch of the
stdlib's folding and encoding.
"""

from __future__ import annotations

import email
import email.policy
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import css_inline
import msgspec
import pytest
from gateway_email import Email, html_to_text
from gateway_email.compose import (
    MessageWriter,
    Parts,
    build_message,
    header_text,
    mailbox,
    make_boundary,
)

from gateway import Delivery, template_context
from gateway.plan import Plan
from gateway.render import _scenario_deliveries, read_events
from gateway.router import plan_deliveries

from .conftest import load_plan

CONF = Path(__file__).resolve().parents[1] / "conf" / "tocsin.toml"
EXAMPLES = CONF.parent / "examples"
DATE = datetime(2026, 11, 25, 9, 30, 5, tzinfo=UTC)


def reference_parts(channel: Email, delivery: Delivery) -> Parts:
    """The parts as the obvious code renders them: one lookup per part, every time."""
    templates = channel.context.templates
    assert delivery.template is not None
    notification = delivery.template
    subject_file = templates.find(notification, "email.subject", delivery.locale)
    assert subject_file is not None
    folder = templates.root / subject_file.rpartition("/")[0]
    inner = subject_file[len(notification) + 1 :]
    locale = inner.partition("/")[0] if "/" in inner else delivery.locale
    context = template_context(delivery, delivery.decode_event())

    def render(part: str) -> str | None:
        if not (folder / f"{part}.j2").is_file():
            return None
        return templates.render(notification, part, locale, context)

    subject = header_text(render("email.subject") or "")
    html = render("email.html")
    if html is not None:
        html = css_inline.inline(html, keep_at_rules=True, load_remote_stylesheets=False)
    text = render("email.txt")
    text = text.strip() + "\n" if text is not None else html_to_text(html or "")
    return Parts(subject=subject, text=text, html=html)


def reference_bytes(channel: Email, delivery: Delivery, boundary: str) -> bytes:
    message = build_message(
        delivery_id=delivery.id,
        sender=channel.sender,
        recipient=channel.recipient(delivery),
        reply_to=channel.reply_to,
        parts=reference_parts(channel, delivery),
        date=DATE,
    )
    if message.is_multipart():
        message.set_boundary(boundary)
    return message.as_bytes(policy=SMTP)


def shipped_email_deliveries(plan: Plan) -> list[Delivery]:
    """Every email delivery the shipped rules and scenarios make from the shipped samples,
    in fr, en and three locales that fall back."""
    out = []
    for path in sorted(EXAMPLES.glob("*.json")):
        events, problems = read_events(path)
        assert not problems
        for _, event, raw in events:
            routed = plan_deliveries(plan.rules, event, raw) + _scenario_deliveries(
                plan, event, raw
            )
            for delivery in routed:
                if isinstance(plan.channels[delivery.channel], Email) and delivery.template:
                    # fr-BE falls back to fr, de (no folder) to the default, None too.
                    for locale in ("fr", "en", "fr-BE", "de", None):
                        out.append(msgspec.structs.replace(delivery, locale=locale))
    return out


@pytest.fixture(scope="module")
def plan() -> Plan:
    return load_plan(CONF)


def test_every_shipped_email_is_sent_as_the_plain_code_would_build_it(plan):
    deliveries = shipped_email_deliveries(plan)
    templates = {d.template for d in deliveries}
    # Most of the shipped pack: a sample set that stopped reaching it would hollow this out.
    assert len(templates) >= 20, sorted(templates)
    multipart = 0
    for delivery in deliveries:
        channel = plan.channels[delivery.channel]
        assert isinstance(channel, Email)
        boundary = make_boundary()
        expected = reference_bytes(channel, delivery, boundary)
        sent = channel.data(delivery, date=DATE, boundary=boundary)
        where = f"{delivery.template} {delivery.locale} ({delivery.rule})"
        assert sent == expected, where
        # Twice: the second comes from the cached lookups.
        assert channel.data(delivery, date=DATE, boundary=boundary) == expected, where
        multipart += b"multipart/alternative" in sent
    assert multipart > len(deliveries) // 2


def test_the_sent_message_reads_back_as_the_message_object(plan):
    """A mail client parsing the bytes sees what ``Email.message`` holds."""
    delivery = next(d for d in shipped_email_deliveries(plan) if d.template == "payment_receipt")
    channel = plan.channels[delivery.channel]
    assert isinstance(channel, Email)
    parsed = email.message_from_bytes(channel.data(delivery), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    built = channel.message(delivery)
    for name in ("From", "To", "Reply-To", "Subject", "Message-ID", "X-Tocsin-Delivery"):
        assert parsed[name] == built[name], name
    for kind in ("plain", "html"):
        got, want = parsed.get_body((kind,)), built.get_body((kind,))
        assert got is not None and want is not None
        # Read from the wire, lines end in CRLF; the object holds LF.
        assert got.get_content().replace("\r\n", "\n") == want.get_content()


SUBJECTS = [
    "Receipt",
    "Paiement reçu : 1\u202f250,00\xa0€ — facture FA-2026-0042",
    "x" * 69,  # "Subject: " + 69 = 78: the longest line written as is
    "x" * 70,  # 79: folded by the stdlib
    "word " * 20 + "end",
    "=?utf-8?q?looks_encoded?= but is not",
    "Tabs\tand  double  spaces",  # header_text collapses them; checked as given too
    '(parens) and "quotes" and \\backslash',
    "日本語の件名 " * 6,
    "a" * 120,
]
NAMES = [
    "",
    "Ada Lovelace",
    "Hélène Dupont",
    "Dupont, Jean",
    "J. R. R. Tolkien",
    'Name "quoted"',
    "x" * 60,
    "Atelier Dupont SARL",
    "日本 太郎",
]
ADDRESSES = ["ada@example.com", "first.last+tag@sub.example.co.uk", "a_b-c@xn--bcher-kva.example"]


@pytest.mark.parametrize("subject", SUBJECTS)
@pytest.mark.parametrize("name", NAMES)
def test_headers_fold_and_encode_exactly_as_the_stdlib_does(subject, name):
    sender = mailbox("paiements@acme.example", "Acme Paiements")
    reply_to = mailbox("contact@acme.example")
    writer = MessageWriter(sender, reply_to)
    for i, address in enumerate(ADDRESSES):
        recipient = mailbox(address, name)
        delivery_id = "msg_" + "0123456789abcdef" * (1 + 3 * i)  # up to 196 characters
        delivery_id = delivery_id[:128]
        for html in (None, "<p>Hello =?x?= world</p>\n" + "<p>long line " * 30):
            parts = Parts(subject=subject, text="Bonjour,\n\nligne  \nfin \t\n", html=html)
            for date in (DATE, DATE.astimezone(timezone(timedelta(hours=-5)))):
                message = build_message(
                    delivery_id=delivery_id,
                    sender=sender,
                    recipient=recipient,
                    reply_to=reply_to,
                    parts=parts,
                    date=date,
                )
                boundary = make_boundary()
                if html is not None:
                    message.set_boundary(boundary)
                expected = message.as_bytes(policy=SMTP)
                got = writer.message_bytes(
                    delivery_id=delivery_id,
                    recipient=recipient,
                    parts=parts,
                    date=date,
                    boundary=boundary,
                )
                assert got == expected, (subject, name, address, date)


def test_a_boundary_of_another_shape_is_folded_by_the_stdlib():
    writer = MessageWriter(mailbox("a@example.com"), None)
    recipient = Address(username="b", domain="example.com")
    parts = Parts(subject="s", text="t\n", html="<p>h</p>")
    message = build_message(
        delivery_id="msg_1",
        sender=mailbox("a@example.com"),
        recipient=recipient,
        reply_to=None,
        parts=parts,
        date=DATE,
    )
    message.set_boundary("b" * 70)
    got = writer.message_bytes(
        delivery_id="msg_1", recipient=recipient, parts=parts, date=DATE, boundary="b" * 70
    )
    assert got == message.as_bytes(policy=SMTP)


def test_header_text_drops_every_control_character_and_keeps_no_break_spaces():
    controls = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cc"]
    for ch in controls:
        assert ch not in header_text(f"a{ch}b"), hex(ord(ch))
    assert (
        header_text(" Reçu\r\n\tde  1\u202f250,00\xa0€\x00\x7f\x9f ")
        == "Reçu de 1\u202f250,00\xa0€"
    )
