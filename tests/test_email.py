"""The email channel against a real SMTP server (aiosmtpd) on 127.0.0.1.

Plain SMTP, STARTTLS and implicit TLS with certificates from a throwaway CA (trustme),
AUTH, refusals by code, connection reuse, the .eml outbox, and one event going all the
way from the intake to the SMTP server. Received messages are parsed with the standard
library's ``email`` package, the way a mail client would read them.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trustme
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from gateway_email import Email, EmailConfig, html_to_text

from gateway import (
    Action,
    ChannelContext,
    ConfError,
    Delivery,
    PermanentError,
    Recipient,
    Templates,
    TransientError,
)
from gateway.conf import convert, load_conf
from gateway.plugins import load_registry
from gateway.redis_server import free_port

from .conftest import load_plan, make_event, write_conf

TEMPLATES = Path(__file__).parent / "templates" / "email"
SAMPLE_TEMPLATES = Path(__file__).parent.parent / "conf" / "templates"
SAMPLE_EVENT = Path(__file__).parent.parent / "conf" / "examples" / "payment_succeeded.json"
FROM = "paiements@acme.example"
USER, PASSWORD = "tocsin", "s3cret-pässword"


# -- a real SMTP server ----------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    authenticated: bool

    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class SmtpServer:
    port: int
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"expected {count} messages, got {len(self.received)}")
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)
        return self.received


class Handler:
    """Accepts everything except a few recipients, refused the way real servers do."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        local = address.split("@", maxsplit=1)[0]
        if local == "nosuchuser":
            return "550 5.1.1 <nosuchuser@example.com>: no such user"
        if local == "busy":
            return "451 4.3.0 try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if "spam@example.com" in envelope.rcpt_tos:
            return "554 5.7.1 message rejected as spam"
        assert envelope.mail_from is not None and isinstance(envelope.original_content, bytes)
        self.server.received.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.original_content,
                # STARTTLS sets session.ssl; implicit TLS shows on the transport.
                tls=session.ssl is not None
                or server.transport.get_extra_info("ssl_object") is not None,
                authenticated=bool(session.authenticated),
            )
        )
        self.server.arrived.set()
        return "250 2.0.0 queued"


def authenticator(
    server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USER.encode()
        and auth_data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)  # handled=False: answer 535 on failure


@dataclass
class Certs:
    ca_file: Path
    server_context: ssl.SSLContext


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Certs(ca_file, context)


StartSmtp = Callable[..., Awaitable[SmtpServer]]


@pytest.fixture
async def smtp_server(certs: Certs) -> AsyncIterator[StartSmtp]:
    """``await smtp_server(security="none"|"starttls"|"tls", auth=False, idle_timeout=300)``."""
    servers: list[asyncio.Server] = []

    async def start(
        security: str = "none", auth: bool = False, idle_timeout: float = 300
    ) -> SmtpServer:
        state = SmtpServer(port=0)
        handler = Handler(state)

        def factory() -> SMTPServer:
            state.connections += 1
            return SMTPServer(
                handler,
                hostname="mx.test",
                tls_context=certs.server_context if security == "starttls" else None,
                require_starttls=security == "starttls",
                authenticator=authenticator if auth else None,
                auth_required=auth,
                timeout=idle_timeout,
            )

        server = await asyncio.get_running_loop().create_server(
            factory,
            "127.0.0.1",
            0,
            ssl=certs.server_context if security == "tls" else None,
        )
        servers.append(server)
        state.port = server.sockets[0].getsockname()[1]
        return state

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


# -- the channel -----------------------------------------------------------------------


@pytest.fixture
async def channels(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Email]]]:
    """``await channels(**conf)``: a started email channel, closed after the test."""
    started: list[Email] = []

    async def make(templates: Path = TEMPLATES, **options: Any) -> Email:
        conf = {"from_address": FROM, **options}
        context = ChannelContext(
            templates=Templates(templates, "fr", {}),
            data_dir=tmp_path / "var",
            default_locale="fr",
        )
        channel = Email("mail", convert(conf, EmailConfig), context)
        await channel.start()
        started.append(channel)
        return channel

    yield make
    for channel in started:
        await channel.close()


def smtp_options(server: SmtpServer, **options: Any) -> dict[str, Any]:
    return {
        "backend": "smtp",
        "host": "127.0.0.1",
        "port": server.port,
        "security": "none",
        "timeout": "5s",
        **options,
    }


def delivery(
    event: dict[str, Any] | None = None,
    *,
    template: str = "receipt",
    locale: str | None = "fr",
    to: str | None = None,
    attempt: int = 1,
    delivery_id: str = "msg_0123456789abcdef01234567",
) -> Delivery:
    """The delivery the router makes for ``to = ["customer"]`` (or a literal address)."""
    event = event or make_event()
    customer = event.get("customer") or {}
    recipient = (
        Recipient(kind="address", address=to)
        if to is not None
        else Recipient(
            kind="customer",
            name=customer.get("name"),
            email=customer.get("email"),
            locale=customer.get("locale"),
        )
    )
    return Delivery(
        id=delivery_id,
        event_id=event["id"],
        event_type=event["type"],
        rule="receipts",
        channel="mail",
        event=msgspec.Raw(json.dumps(event).encode()),
        template=template,
        locale=locale,
        recipient=recipient,
        attempt=attempt,
    )


def french_event(**customer: Any) -> dict[str, Any]:
    return make_event(
        customer={
            "id": "cus_1",
            "name": "Hélène Dupont",
            "email": "helene@example.com",
            "locale": "fr",
            **customer,
        },
        refs={"invoice_ref": "FA-2026-0042"},
        data={"amount": 123450, "currency": "EUR", "card": {"last4": "4242"}},
    )


def headers_of(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def body_of(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None and part.get_content_type() == f"text/{subtype}"
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")  # SMTP's line ends, as a mail client shows them


# -- messages as a mail client reads them ----------------------------------------------


async def test_plain_smtp_delivers_a_french_multipart_receipt(smtp_server, channels):
    server = await smtp_server()
    channel = await channels(
        **smtp_options(server), from_name="Acme Paiements", reply_to="aide@acme.example"
    )
    job = delivery(french_event())
    await channel.send(job)

    [got] = await server.wait_for(1)
    assert not got.tls
    assert got.mail_from == FROM
    assert got.rcpt_tos == ["helene@example.com"]
    msg = got.message()
    assert msg["From"] == "Acme Paiements <paiements@acme.example>"
    assert msg["To"] == "Hélène Dupont <helene@example.com>"
    assert msg["Reply-To"] == "aide@acme.example"
    assert msg["Subject"] == "Reçu de paiement — facture FA-2026-0042"
    assert msg["Message-ID"] == f"<{job.id}@acme.example>"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Tocsin-Delivery"] == job.id
    assert parsedate_to_datetime(msg["Date"]).tzinfo is not None
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]

    # On the wire: 7-bit clean, accents as RFC 2047 words and quoted-printable UTF-8.
    raw = got.data
    assert raw.isascii()
    head = headers_of(raw)
    assert b"To: =?utf-8?q?H=C3=A9l=C3=A8ne?= Dupont <helene@example.com>" in head
    assert b"=?utf-8?" in head.split(b"Subject:")[1].split(b"\r\nDate:")[0]
    assert b"Nous avons bien re=C3=A7u votre paiement de 1234,50 =E2=82=AC pour la fa" in raw

    text = body_of(msg, "plain")
    assert text == (
        "Bonjour Hélène Dupont,\n"
        "\n"
        "Nous avons bien reçu votre paiement de 1234,50 € pour la facture FA-2026-0042.\n"
        "Il apparaîtra sur votre relevé sous 2 à 3 jours ouvrés.\n"
        "\n"
        "— L'équipe Acme\n"
    )
    html = body_of(msg, "html")
    # CSS inlined for mail clients that drop <style>; the customer's name escaped.
    assert "<style>" not in html
    assert '<span class="amount" style="font-weight: bold;">1234,50 €</span>' in html
    assert '<p style="color: #333333;margin: 0 0 12px;">Bonjour Hélène Dupont,</p>' in html


async def test_english_locale_uses_the_english_parts(smtp_server, channels):
    server = await smtp_server()
    channel = await channels(**smtp_options(server))
    await channel.send(delivery(french_event(locale="en"), locale="en"))
    [got] = await server.wait_for(1)
    msg = got.message()
    assert msg["Subject"] == "Payment receipt — invoice FA-2026-0042"
    assert body_of(msg, "plain").startswith("Hello Hélène Dupont,\n")
    assert msg.get_content_type() == "text/plain"  # no English HTML part: text only


async def test_html_only_template_gets_a_readable_text_part(smtp_server, channels):
    server = await smtp_server()
    channel = await channels(**smtp_options(server))
    await channel.send(delivery(french_event(), template="html_only"))
    [got] = await server.wait_for(1)
    msg = got.message()
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    # The hidden pre-header and Outlook-only comment are not read; the no-break spaces
    # of the HTML stay (so "2 à 3" never breaks across lines).
    assert body_of(msg, "plain") == (
        "Merci pour votre paiement\n"
        "=========================\n"
        "\n"
        "Bonjour Hélène Dupont,\n"
        "\n"
        "Nous avons bien reçu votre paiement de 1234,50 € pour la facture FA-2026-0042.\n"
        "Il apparaîtra sur votre relevé sous 2\u00a0à\u00a03 jours ouvrés.\n"
        "\n"
        "Facture            FA-2026-0042\n"
        "Montant            1234,50 €\n"
        "Moyen de paiement  Carte •••• 4242\n"
        "\n"
        "Ce que vous pouvez faire maintenant :\n"
        "\n"
        "- télécharger votre facture ;\n"
        "- consulter l'historique de vos paiements.\n"
        "\n"
        "Tout se trouve dans votre espace client "
        "(https://acme.example/compte?facture=FA-2026-0042). "
        "Une question ? Écrivez-nous à aide@acme.example.\n"
        "\n"
        "— L'équipe Acme\n"
    )


async def test_text_only_template_sends_a_single_text_part(smtp_server, channels):
    server = await smtp_server()
    channel = await channels(**smtp_options(server))
    await channel.send(delivery(french_event(), template="text_only", locale=None))
    [got] = await server.wait_for(1)
    msg = got.message()
    assert msg.get_content_type() == "text/plain"
    assert msg["Subject"] == "Rappel : facture FA-2026-0042"
    assert body_of(msg, "plain") == "La facture FA-2026-0042 reste à régler.\n"


async def test_subject_is_one_line_whatever_the_template(channels):
    channel = await channels()
    preview = channel.preview(delivery(french_event(), template="multiline_subject"))
    assert preview["subject"] == "Facture FA-2026-0042 réglée"


async def test_retry_carries_the_same_message_id(smtp_server, channels):
    """Receivers and mail clients drop a duplicate a crash or timeout may cause."""
    server = await smtp_server()
    channel = await channels(**smtp_options(server))
    event = french_event()
    await channel.send(delivery(event, attempt=1))
    await channel.send(delivery(event, attempt=2))
    first, second = await server.wait_for(2)
    assert first.message()["Message-ID"] == second.message()["Message-ID"]
    other = delivery(event, delivery_id="msg_ffffffffffffffffffffffff")
    assert channel.message(other)["Message-ID"] != first.message()["Message-ID"]


async def test_event_data_cannot_inject_headers(smtp_server, channels):
    server = await smtp_server()
    channel = await channels(**smtp_options(server))
    event = french_event(name="Dupont\r\nBcc: evil@x.example")
    event["refs"] = {"invoice_ref": "FA-1\r\nBcc: evil@x.example\nX-Evil: 1"}
    await channel.send(delivery(event))

    [got] = await server.wait_for(1)
    assert got.rcpt_tos == ["helene@example.com"]
    lines = headers_of(got.data).split(b"\r\n")
    assert not [line for line in lines if line.lower().startswith((b"bcc", b"x-evil"))]
    msg = got.message()
    assert msg["To"] == '"Dupont Bcc: evil@x.example" <helene@example.com>'
    assert msg["Subject"] == "Reçu de paiement — facture FA-1 Bcc: evil@x.example X-Evil: 1"
    assert msg["Bcc"] is None and msg["X-Evil"] is None


async def test_an_address_carrying_a_header_is_refused_for_good(smtp_server, channels):
    server = await smtp_server()
    channel = await channels(**smtp_options(server))
    event = french_event(email="helene@example.com\r\nBcc: evil@x.example")
    with pytest.raises(PermanentError, match="invalid recipient address"):
        await channel.send(delivery(event))
    assert server.connections == 0


@pytest.mark.parametrize(
    ("customer", "reason"),
    [
        ({"email": None}, "the event's customer has no email address"),
        ({"email": "helene.example.com"}, "invalid recipient address 'helene.example.com'"),
        ({"email": "helene@localhost"}, "is not a valid domain"),
        ({"email": "hélène@example.com"}, "is not a valid local part"),
    ],
)
async def test_missing_or_invalid_address_fails_for_good(channels, customer, reason):
    channel = await channels()
    event = french_event(**customer)
    if customer.get("email") is None:
        del event["customer"]["email"]
    with pytest.raises(PermanentError, match=reason):
        await channel.send(delivery(event))


async def test_literal_address_from_the_rule(smtp_server, channels):
    server = await smtp_server()
    channel = await channels(**smtp_options(server))
    await channel.send(delivery(french_event(), to="compta@acme.example"))
    [got] = await server.wait_for(1)
    assert got.rcpt_tos == ["compta@acme.example"]
    assert got.message()["To"] == "compta@acme.example"


async def test_internationalized_domain_is_sent_in_ascii(smtp_server, channels):
    server = await smtp_server()
    channel = await channels(**smtp_options(server))
    await channel.send(delivery(french_event(), to="compta@société.example"))
    [got] = await server.wait_for(1)
    assert got.rcpt_tos == ["compta@xn--socit-esab.example"]


# -- TLS and authentication ------------------------------------------------------------


async def test_starttls_with_authentication(smtp_server, channels, certs):
    server = await smtp_server("starttls", auth=True)
    channel = await channels(
        **smtp_options(
            server,
            security="starttls",
            username=USER,
            password=PASSWORD,
            ca_file=str(certs.ca_file),
        )
    )
    await channel.send(delivery(french_event()))
    [got] = await server.wait_for(1)
    assert got.tls and got.authenticated
    assert got.message()["Subject"] == "Reçu de paiement — facture FA-2026-0042"


async def test_wrong_password_is_retried_and_never_shown(smtp_server, channels, certs):
    server = await smtp_server("starttls", auth=True)
    channel = await channels(
        **smtp_options(
            server,
            security="starttls",
            username=USER,
            password="not-the-password",
            ca_file=str(certs.ca_file),
        )
    )
    with pytest.raises(TransientError) as caught:
        await channel.send(delivery(french_event()))
    reason = caught.value.reason
    assert f"127.0.0.1:{server.port}" in reason and "authentication as 'tocsin' failed" in reason
    assert "535" in reason and "not-the-password" not in reason
    assert server.received == []


async def test_implicit_tls(smtp_server, channels, certs):
    server = await smtp_server("tls")
    channel = await channels(**smtp_options(server, security="tls", ca_file=str(certs.ca_file)))
    await channel.send(delivery(french_event()))
    [got] = await server.wait_for(1)
    assert got.tls


async def test_untrusted_certificate_is_refused(smtp_server, channels):
    """Without the private CA the server's certificate is not trusted: nothing is sent."""
    server = await smtp_server("starttls")
    channel = await channels(**smtp_options(server, security="starttls"))
    with pytest.raises(TransientError, match="CERTIFICATE_VERIFY_FAILED"):
        await channel.send(delivery(french_event()))
    assert server.received == []


async def test_server_requiring_starttls_refuses_plain_sessions(smtp_server, channels):
    server = await smtp_server("starttls")
    channel = await channels(**smtp_options(server))
    with pytest.raises(TransientError, match="530 Must issue a STARTTLS command first"):
        await channel.send(delivery(french_event()))
    assert server.received == []


# -- refusals and failures -------------------------------------------------------------


async def test_unknown_recipient_fails_for_good_with_the_servers_reply(smtp_server, channels):
    server = await smtp_server()
    channel = await channels(**smtp_options(server))
    with pytest.raises(PermanentError) as caught:
        await channel.send(delivery(french_event(email="nosuchuser@example.com")))
    assert caught.value.status == 550
    assert caught.value.reason == (
        f"SMTP 127.0.0.1:{server.port} refused recipient nosuchuser@example.com: "
        "550 5.1.1 <nosuchuser@example.com>: no such user"
    )
    # The connection is still good: the next message goes over it.
    await channel.send(delivery(french_event()))
    await server.wait_for(1)
    assert server.connections == 1


async def test_try_later_is_retried(smtp_server, channels):
    server = await smtp_server()
    channel = await channels(**smtp_options(server))
    with pytest.raises(TransientError) as caught:
        await channel.send(delivery(french_event(email="busy@example.com")))
    assert caught.value.status == 451
    assert "refused recipient busy@example.com: 451 4.3.0 try later" in caught.value.reason


async def test_message_refused_at_data_fails_for_good(smtp_server, channels):
    server = await smtp_server()
    channel = await channels(**smtp_options(server))
    with pytest.raises(PermanentError, match=r"refused the message: 554 5\.7\.1 message rejected"):
        await channel.send(delivery(french_event(email="spam@example.com")))


async def test_no_server_listening_is_retried(channels):
    channel = await channels(backend="smtp", host="127.0.0.1", port=free_port(), security="none")
    with pytest.raises(TransientError, match=r"cannot connect to SMTP 127\.0\.0\.1:"):
        await channel.send(delivery(french_event()))


async def test_template_error_fails_for_good_naming_the_file(channels, tmp_path):
    broken = tmp_path / "tpl"
    (broken / "receipt").mkdir(parents=True)
    (broken / "receipt" / "email.subject.j2").write_text("Reçu\n")
    (broken / "receipt" / "email.txt.j2").write_text("ligne 1\n{{ data.no_such_field }}\n")
    channel = await channels(templates=broken)
    with pytest.raises(PermanentError, match=r"receipt/email\.txt\.j2, line 2.*no_such_field"):
        await channel.send(delivery(french_event(), locale=None))


# -- connection reuse ------------------------------------------------------------------


async def test_connections_are_reused_across_messages(smtp_server, channels):
    server = await smtp_server()
    channel = await channels(**smtp_options(server), pool_size=2)
    for i in range(3):
        await channel.send(delivery(french_event(), delivery_id=f"msg_seq{i}"))
    assert server.connections == 1
    await asyncio.gather(
        *(channel.send(delivery(french_event(), delivery_id=f"msg_par{i}")) for i in range(6))
    )
    assert len(await server.wait_for(9)) == 9
    assert server.connections == 2  # never more than pool_size at once


async def test_connection_closed_by_the_server_is_replaced(smtp_server, channels):
    server = await smtp_server(idle_timeout=0.5)  # closes idle sessions (421) quickly
    channel = await channels(**smtp_options(server))
    await channel.send(delivery(french_event(), delivery_id="msg_before"))
    await asyncio.sleep(1.5)  # the server has dropped the pooled connection by now
    await channel.send(delivery(french_event(), delivery_id="msg_after"))
    assert [r.message()["X-Tocsin-Delivery"] for r in await server.wait_for(2)] == [
        "msg_before",
        "msg_after",
    ]
    assert server.connections == 2


# -- outbox, preview, conf -------------------------------------------------------------


async def test_outbox_writes_one_eml_per_delivery(channels, tmp_path):
    channel = await channels()  # backend "outbox" is the default
    job = delivery(french_event(), delivery_id="msg_outbox1")
    await channel.send(job)
    await channel.send(delivery(french_event(), delivery_id="msg_outbox1", attempt=2))

    outbox = tmp_path / "var" / "outbox" / "email"
    assert [p.name for p in outbox.iterdir()] == ["msg_outbox1.eml"]  # retry replaced it
    msg = email.message_from_bytes(
        (outbox / "msg_outbox1.eml").read_bytes(), policy=email.policy.default
    )
    assert isinstance(msg, EmailMessage)
    assert msg["To"] == "Hélène Dupont <helene@example.com>"
    assert msg["Subject"] == "Reçu de paiement — facture FA-2026-0042"
    assert msg["Message-ID"] == "<msg_outbox1@acme.example>"
    assert "1234,50 €" in body_of(msg, "plain") and "1234,50 €" in body_of(msg, "html")


async def test_outbox_folder_is_configurable(channels, tmp_path):
    channel = await channels(outbox_dir=str(tmp_path / "mails"))
    await channel.send(delivery(french_event(), delivery_id="msg_x"))
    assert (tmp_path / "mails" / "msg_x.eml").is_file()


async def test_preview_shows_what_would_be_sent_without_sending(channels, tmp_path):
    channel = await channels(from_name="Acme Paiements")
    shown = channel.preview(delivery(french_event()))
    assert list(shown) == ["from", "to", "subject", "text", "html"]
    assert shown["from"] == "Acme Paiements <paiements@acme.example>"
    assert shown["to"] == "Hélène Dupont <helene@example.com>"
    assert shown["subject"] == "Reçu de paiement — facture FA-2026-0042"
    assert shown["text"].startswith("Bonjour Hélène Dupont,\n")
    assert 'style="font-weight: bold;">1234,50 €' in shown["html"]
    assert not (tmp_path / "var" / "outbox").exists()


def test_sample_receipt_templates_render_in_french_and_english(tmp_path):
    """The templates shipped in conf/ render against the shipped sample event."""
    filters = load_registry().filters  # money, date, card_mask...
    context = ChannelContext(Templates(SAMPLE_TEMPLATES, "fr", filters), tmp_path, "fr")
    channel = Email("mail", convert({"from_address": FROM}, EmailConfig), context)
    event = json.loads(SAMPLE_EVENT.read_text())
    fr = channel.preview(delivery(event, template="payment_receipt", locale="fr-FR"))
    assert fr["to"] == "Atelier Dupont SARL <compta@atelier-dupont.fr>"
    # CLDR's no-break spaces in the amount, in the subject as in the body.
    assert fr["subject"] == "Paiement reçu : 1\u202f250,00\xa0€ — facture FA-2026-0042"
    assert "Nous avons bien reçu votre paiement de 1\u202f250,00\xa0€. Merci !" in fr["text"]
    assert "Date : 25 novembre 2026" in fr["text"]
    # The customer sees their invoice number, never the gateway's event id.
    assert "Facture : FA-2026-0042" in fr["text"]
    assert "evt_demo_0001" not in fr["text"] + fr["html"]
    assert "Carte •••• 4242" in fr["html"]
    en = channel.preview(delivery(event, template="payment_receipt", locale="en"))
    assert en["subject"] == "Payment received: €1,250.00 — invoice FA-2026-0042"
    assert "We have received your payment of €1,250.00. Thank you!" in en["text"]


async def test_a_french_amount_reaches_the_subject_with_its_no_break_spaces(tmp_path, smtp_server):
    """A mail client shows ``1 250,00 €`` on one line, never ``€`` alone at a wrap."""
    server = await smtp_server()
    filters = load_registry().filters
    context = ChannelContext(Templates(SAMPLE_TEMPLATES, "fr", filters), tmp_path, "fr")
    channel = Email(
        "mail", convert({"from_address": FROM, **smtp_options(server)}, EmailConfig), context
    )
    await channel.start()
    try:
        event = json.loads(SAMPLE_EVENT.read_text())
        await channel.send(delivery(event, template="payment_receipt", locale="fr-FR"))
    finally:
        await channel.close()
    [got] = await server.wait_for(1)
    subject = got.message()["Subject"]
    assert subject == "Paiement reçu : 1\u202f250,00\xa0€ — facture FA-2026-0042"
    assert "1\u202f250,00\xa0€" in body_of(got.message(), "plain")


async def test_the_sent_receipt_says_who_sent_it_in_both_parts(tmp_path, smtp_server):
    """The shipped [brand] reaches the customer's mailbox, in the text and the HTML part."""
    server = await smtp_server()
    brand = load_conf(SAMPLE_TEMPLATES.parent / "tocsin.toml").brand
    templates = Templates(SAMPLE_TEMPLATES, "fr", load_registry().filters, brand=brand)
    channel = Email(
        "mail",
        convert({"from_address": FROM, **smtp_options(server)}, EmailConfig),
        ChannelContext(templates, tmp_path, "fr"),
    )
    await channel.start()
    try:
        event = json.loads(SAMPLE_EVENT.read_text())
        await channel.send(delivery(event, template="payment_receipt", locale="en"))
    finally:
        await channel.close()
    [got] = await server.wait_for(1)
    text, html = body_of(got.message(), "plain"), body_of(got.message(), "html")
    for part in (text, html):
        assert "ACME Tools (demo)" in part
        assert "75011 Paris" in part
        assert "Paris Trade and Companies Register" in part
        assert "support@example.com" in part
        assert "FA-2026-0042" in part
        assert "evt_demo_0001" not in part
    assert '<a href="mailto:support@example.com"' in html


def test_send_timeout_follows_the_configured_timeout(tmp_path):
    context = ChannelContext(Templates(TEMPLATES, "fr", {}), tmp_path, "fr")
    smtp = Email(
        "m",
        convert({"from_address": FROM, "backend": "smtp", "timeout": "10s"}, EmailConfig),
        context,
    )
    outbox = Email("m", convert({"from_address": FROM, "timeout": "10s"}, EmailConfig), context)
    # SMTP: up to `timeout` waiting for a pooled connection, then up to `timeout` sending.
    assert smtp.send_timeout == 21.0
    assert outbox.send_timeout == 11.0


def test_check_action_reports_missing_parts(tmp_path):
    context = ChannelContext(Templates(TEMPLATES, "fr", {}), tmp_path, "fr")
    channel = Email("mail", convert({"from_address": FROM}, EmailConfig), context)
    assert channel.check_action(Action(channel="mail", template="receipt", to=["customer"])) == []
    assert channel.check_action(Action(channel="mail", template="subject_only")) == [
        "template: subject_only/ has neither email.html.j2 nor email.txt.j2"
    ]
    assert channel.check_action(Action(channel="mail", template="no_such_notification")) == [
        "template: 'no_such_notification' has no email parts "
        "(email.subject.j2, and email.html.j2 or email.txt.j2)"
    ]


def test_tocsin_check_lists_every_email_problem(tmp_path, redis_url):
    extra = """
    [channels.mail]
    type = "email"
    from_address = "paiements@acme.example"

    [channels.bad_mail]
    type = "email"
    from_address = "not an address"

    [channels.clear_password]
    type = "email"
    from_address = "paiements@acme.example"
    backend = "smtp"
    host = "smtp.acme.example"
    security = "none"
    username = "tocsin"
    password = "secret"

    [channels.typo]
    type = "email"
    from_adress = "paiements@acme.example"

    [channels.no_ca]
    type = "email"
    from_address = "paiements@acme.example"
    ca_file = "/nonexistent/ca.pem"
    """
    rules = """
    [rules.no-body]
    events = ["payment.succeeded"]
    [[rules.no-body.actions]]
    channel = "mail"
    template = "no_body"
    to = ["customer"]

    [rules.no-to]
    events = ["payment.succeeded"]
    [[rules.no-to.actions]]
    channel = "mail"
    template = "no_body"
    """
    conf = write_conf(
        tmp_path,
        redis_url=redis_url,
        rules=rules,
        extra=extra,
        templates={"no_body/fr/email.html.j2": "<p>x</p>\n"},
    )
    with pytest.raises(ConfError) as caught:
        load_plan(conf)
    problems = "\n".join(caught.value.problems)
    assert "channels.bad_mail: from_address: an address cannot hold spaces" in problems
    assert "channels.clear_password: security = 'none' would send the password in clear" in problems
    assert "channels.typo: Object contains unknown field `from_adress`" in problems
    assert "channels.no_ca: ca_file: cannot load /nonexistent/ca.pem" in problems
    assert "rules.no-body.actions[0]: template: no_body/fr/ has no email.subject.j2" in problems
    assert "rules.no-to.actions[0].to: channel 'mail' needs recipients" in problems
    assert "secret" not in problems.replace("secrets", "")


# -- the whole path --------------------------------------------------------------------


def _template_files() -> dict[str, str]:
    return {
        p.relative_to(TEMPLATES).as_posix(): p.read_text()
        for p in TEMPLATES.rglob("*.j2")
        if p.relative_to(TEMPLATES).parts[0] == "receipt"
    }


EMAIL_RULE = """
[rules.receipts]
events = ["payment.succeeded"]
[[rules.receipts.actions]]
channel = "mail"
template = "receipt"
to = ["customer"]
"""


async def test_event_posted_to_intake_arrives_by_smtp(
    tmp_path, redis_url, start_gateway, smtp_server
):
    server = await smtp_server()
    extra = f"""
    [channels.mail]
    type = "email"
    backend = "smtp"
    host = "127.0.0.1"
    port = {server.port}
    security = "none"
    from_address = "{FROM}"
    from_name = "Acme Paiements"
    timeout = "5s"
    """
    conf = write_conf(
        tmp_path, redis_url=redis_url, rules=EMAIL_RULE, extra=extra, templates=_template_files()
    )
    gw = await start_gateway(conf)
    event = french_event()
    status, _ = await gw.post(event)
    assert status == 202

    [got] = await server.wait_for(1)
    assert got.rcpt_tos == ["helene@example.com"]
    msg = got.message()
    assert msg["From"] == "Acme Paiements <paiements@acme.example>"
    assert msg["Subject"] == "Reçu de paiement — facture FA-2026-0042"
    assert "Nous avons bien reçu votre paiement de 1234,50 €" in body_of(msg, "plain")
    assert msg["X-Tocsin-Delivery"].startswith("msg_")
    assert msg["Message-ID"] == f"<{msg['X-Tocsin-Delivery']}@acme.example>"


async def test_event_posted_to_intake_lands_in_the_outbox(tmp_path, redis_url, start_gateway):
    extra = f"""
    [channels.mail]
    type = "email"
    from_address = "{FROM}"
    """
    conf = write_conf(
        tmp_path, redis_url=redis_url, rules=EMAIL_RULE, extra=extra, templates=_template_files()
    )
    gw = await start_gateway(conf)
    assert (await gw.post(french_event()))[0] == 202
    outbox = tmp_path / "var" / "outbox" / "email"
    for _ in range(100):
        files = list(outbox.glob("*.eml")) if outbox.is_dir() else []
        if files:
            break
        await asyncio.sleep(0.05)
    [eml] = files
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert msg["Subject"] == "Reçu de paiement — facture FA-2026-0042"
    assert msg["Message-ID"] == f"<{eml.stem}@acme.example>"


# -- html_to_text ----------------------------------------------------------------------


def test_html_to_text_lists_links_and_breaks():
    html = """
    <p>Bonjour,<br>voici vos échéances :</p>
    <ol><li>15 janvier</li><li>15 février<ul><li>prélèvement SEPA</li></ul></li></ol>
    <p>Voir <a href="https://acme.example/echeancier">l'échéancier</a>,
       <a href="https://acme.example/aide">https://acme.example/aide</a> ou
       <a href="#haut">haut de page</a>.</p>
    <blockquote>Citation<p>sur deux paragraphes</p></blockquote>
    <p>Fin&nbsp;!</p>
    """
    assert html_to_text(html) == (
        "Bonjour,\n"
        "voici vos échéances :\n"
        "\n"
        "1. 15 janvier\n"
        "2. 15 février\n"
        "   - prélèvement SEPA\n"
        "\n"
        "Voir l'échéancier (https://acme.example/echeancier), https://acme.example/aide "
        "ou haut de page.\n"
        "\n"
        "> Citation\n"
        ">\n"
        "> sur deux paragraphes\n"
        "\n"
        "Fin\u00a0!\n"
    )


def test_html_to_text_reads_layout_tables_cell_by_cell():
    html = """
    <table width="100%"><tr><td width="20"></td><td>
      <table><tr><td><img src="logo.png" alt="Acme"></td></tr></table>
      <p>Premier paragraphe.</p><p>Second paragraphe.</p>
    </td></tr>
    <tr><td></td><td>Pied de page</td></tr></table>
    """
    assert html_to_text(html) == (
        "Acme\n\nPremier paragraphe.\n\nSecond paragraphe.\n\nPied de page\n"
    )
