"""email: customer and staff emails, over SMTP or into an ``.eml`` outbox.

Conf (every field: docs/email.md)::

    [channels.customer_email]
    type = "email"
    from_address = "paiements@acme.example"
    from_name = "Acme Paiements"
    backend = "smtp"                      # or "outbox" (the default): .eml files
    host = "smtp.acme.example"
    security = "starttls"                 # "tls" (implicit, port 465) or "none"
    username = "tocsin"
    password = "${SMTP_PASSWORD}"

A notification's parts, under ``<templates>/<notification>/<locale>/``:
``email.subject.j2`` (required), and ``email.html.j2`` and/or ``email.txt.j2``. Without a
``.txt`` part, the text part is derived from the HTML. CSS in the HTML is inlined.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import msgspec

from gateway import (
    Action,
    Channel,
    ChannelContext,
    Delivery,
    Duration,
    PermanentError,
    Secret,
    TransientError,
    check_address,
    hookimpl,
    template_context,
)

from .compose import MessageWriter, Parts, build_message, header_text, inline_css, mailbox
from .text import html_to_text
from .transport import DEFAULT_PORTS, SmtpPool, SmtpSettings

SUBJECT_PART = "email.subject"
HTML_PART = "email.html"
TEXT_PART = "email.txt"
#: Hosts to which a password may travel without TLS (a local relay).
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
#: Template lookups remembered per (notification, locale).
_LOOKUPS = 1024


class EmailConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: The From address (and the SMTP envelope sender).
    from_address: str
    #: The From display name, e.g. "Acme Paiements".
    from_name: str = ""
    #: Where replies go, when not to from_address.
    reply_to: str = ""
    #: "outbox": write .eml files (no server needed); "smtp": send.
    backend: Literal["outbox", "smtp"] = "outbox"
    #: The outbox folder; relative paths are under [gateway] data_dir.
    outbox_dir: str = "outbox/email"
    host: str = "localhost"
    #: 0: the usual port for ``security`` (587 starttls, 465 tls, 25 none).
    port: int = 0
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str = ""
    password: Secret | None = None
    #: PEM file of the CAs to trust instead of the system's (a private relay's CA).
    ca_file: str = ""
    #: The name given in EHLO; empty: this machine's fully qualified name.
    local_hostname: str = ""
    #: Bounds connecting and one message's exchange (and, separately, waiting for a
    #: free pooled connection).
    timeout: Duration = Duration(30)
    #: SMTP connections kept open and reused across messages.
    pool_size: int = 4


class Email(Channel[EmailConfig]):
    type_name = "email"
    config_type = EmailConfig
    needs_recipients = True
    recipient_field = "email"
    needs_template = True

    def __init__(self, name: str, config: EmailConfig, context: ChannelContext) -> None:
        super().__init__(name, config, context)
        try:
            from_address = check_address(config.from_address)
        except ValueError as exc:
            raise ValueError(f"from_address: {exc}") from None
        reply_to = None
        if config.reply_to:
            try:
                reply_to = check_address(config.reply_to)
            except ValueError as exc:
                raise ValueError(f"reply_to: {exc}") from None
        if any(unicodedata.category(ch) == "Cc" for ch in config.from_name):
            raise ValueError("from_name: must be one line of text, without control characters")
        if config.ca_file:
            try:
                ssl.create_default_context(cafile=context.data_dir / config.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"ca_file: cannot load {config.ca_file}: {exc}") from None
        if config.timeout <= 0:
            raise ValueError("timeout: must be more than 0s")
        if not 1 <= config.pool_size <= 100:
            raise ValueError("pool_size: between 1 and 100")
        if not 0 <= config.port <= 65535:
            raise ValueError("port: between 1 and 65535 (0: the usual one for security)")
        if bool(config.username) != (config.password is not None):
            raise ValueError("username and password: set both or neither")
        if config.backend == "smtp" and not config.host:
            raise ValueError("host: must not be empty")
        if config.username and config.security == "none" and config.host not in _LOOPBACK:
            raise ValueError(
                "security = 'none' would send the password in clear: use 'starttls' or 'tls'"
            )
        self.sender = mailbox(from_address, config.from_name)
        self.reply_to = mailbox(reply_to) if reply_to else None
        self._writer = MessageWriter(self.sender, self.reply_to)
        self._lookups: dict[tuple[str, str | None], tuple[str, dict[str, str]]] = {}
        self.outbox = context.data_dir / config.outbox_dir
        self.settings = SmtpSettings(
            host=config.host,
            port=config.port or DEFAULT_PORTS[config.security],
            security=config.security,
            username=config.username or None,
            password=config.password.reveal() if config.password is not None else None,
            local_hostname=config.local_hostname or None,
            ca_file=str(context.data_dir / config.ca_file) if config.ca_file else None,
            timeout=float(config.timeout),
        )
        self._pool: SmtpPool | None = None

    @property
    def send_timeout(self) -> float:
        # SMTP: waiting for a pooled connection, then the exchange, each bounded by timeout.
        if self.config.backend == "smtp":
            return 2 * float(self.config.timeout) + 1.0
        return float(self.config.timeout) + 1.0

    def check_action(self, action: Action) -> list[str]:
        """Each folder of the notification holding email parts must hold a whole email."""
        if action.template is None:
            return []  # the core already says a template is needed
        root = self.context.templates.root
        top = root / action.template
        folders = [top, *sorted(p for p in top.iterdir() if p.is_dir())] if top.is_dir() else []
        problems = []
        found = False
        for folder in folders:
            names = {p.name for p in folder.glob("email.*.j2")}
            if not names:
                continue
            found = True
            where = folder.relative_to(root).as_posix() + "/"
            if f"{SUBJECT_PART}.j2" not in names:
                problems.append(f"template: {where} has no {SUBJECT_PART}.j2")
            if not names & {f"{HTML_PART}.j2", f"{TEXT_PART}.j2"}:
                problems.append(f"template: {where} has neither {HTML_PART}.j2 nor {TEXT_PART}.j2")
        if not found:
            problems.append(
                f"template: {action.template!r} has no email parts ({SUBJECT_PART}.j2, "
                f"and {HTML_PART}.j2 or {TEXT_PART}.j2)"
            )
        return problems

    async def start(self) -> None:
        if self.config.backend == "smtp":
            self._pool = SmtpPool(self.settings, self.config.pool_size)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # -- composing ---------------------------------------------------------------------

    def recipient(self, delivery: Delivery) -> Address:
        recipient = delivery.recipient
        if recipient is None:
            raise PermanentError("email needs a recipient: set `to` on the rule's action")
        address = recipient.email or recipient.address
        if not address:
            if recipient.kind == "customer":
                raise PermanentError("the event's customer has no email address")
            raise PermanentError(f"recipient ({recipient.kind}) has no email address")
        try:
            checked = check_address(address)
        except ValueError as exc:
            raise PermanentError(f"invalid recipient address {address!r}: {exc}") from None
        return mailbox(checked, recipient.name if recipient.kind == "customer" else None)

    def _files(self, notification: str, locale: str | None) -> tuple[str, dict[str, str]]:
        """The subject's template file, and each part's present beside it.

        All parts come from the folder holding the subject (receipt/en/, receipt/fr/ or
        receipt/): an English subject never travels with a French body. Looked up once
        per notification and locale: Jinja already keeps every template it compiled for
        the life of the process (auto_reload off), and the lookups cost a dozen stat()
        calls per message."""
        key = (notification, locale)
        found = self._lookups.get(key)
        if found is not None:
            return found
        templates = self.context.templates
        subject_file = templates.find(notification, SUBJECT_PART, locale)
        if subject_file is None:
            raise PermanentError(
                f"template {notification}: no {SUBJECT_PART}.j2 for locale "
                f"{locale or self.context.default_locale}"
            )
        folder = templates.root / subject_file.rpartition("/")[0]
        inner = subject_file[len(notification) + 1 :]
        folder_locale = inner.partition("/")[0] if "/" in inner else locale
        files = {}
        for part in (SUBJECT_PART, HTML_PART, TEXT_PART):
            if (folder / f"{part}.j2").is_file():
                name = templates.find(notification, part, folder_locale)
                if name is None:  # cannot happen: the file is there; say so if it does
                    raise PermanentError(f"template {notification}: {part}.j2 vanished")
                files[part] = name
        if len(self._lookups) >= _LOOKUPS:  # locales come from event data: stay bounded
            self._lookups.clear()
        self._lookups[key] = found = (subject_file, files)
        return found

    def parts(self, delivery: Delivery) -> Parts:
        """Subject, text and (optional) HTML, rendered; raises PermanentError."""
        notification = delivery.template
        if notification is None:
            raise PermanentError("email needs a template: set `template` on the rule's action")
        templates = self.context.templates
        subject_file, files = self._files(notification, delivery.locale)
        context = template_context(delivery, delivery.decode_event())

        def render(part: str) -> str | None:
            name = files.get(part)
            return None if name is None else templates.render_file(name, context)

        subject = header_text(render(SUBJECT_PART) or "")
        if not subject:
            raise PermanentError(f"template {subject_file} rendered an empty subject")
        html = render(HTML_PART)
        if html is not None:
            try:
                html = inline_css(html)
            except ValueError as exc:  # css_inline's InlineError
                raise PermanentError(
                    f"template {notification}/{HTML_PART}.j2: cannot inline its CSS: {exc}"
                ) from None
        text = render(TEXT_PART)
        if text is not None:
            text = text.strip() + "\n"
        elif html is not None:
            text = html_to_text(html)
        else:
            raise PermanentError(
                f"template {notification}: no {HTML_PART}.j2 nor {TEXT_PART}.j2 beside "
                f"{subject_file}"
            )
        return Parts(subject=subject, text=text, html=html)

    def message(self, delivery: Delivery, recipient: Address | None = None) -> EmailMessage:
        """The message ``send`` would send (its Date and MIME boundary aside), as an object.

        ``send`` writes the same bytes without building it (``MessageWriter``)."""
        if recipient is None:
            recipient = self.recipient(delivery)
        return build_message(
            delivery_id=delivery.id,
            sender=self.sender,
            recipient=recipient,
            reply_to=self.reply_to,
            parts=self.parts(delivery),
            date=datetime.now(UTC),
        )

    def data(
        self,
        delivery: Delivery,
        recipient: Address | None = None,
        *,
        date: datetime | None = None,
        boundary: str | None = None,
    ) -> bytes:
        """What ``send`` sends: ``message(...).as_bytes(policy=SMTP)``, byte for byte
        (for the same Date and MIME boundary), written without the ``EmailMessage``."""
        return self._writer.message_bytes(
            delivery_id=delivery.id,
            recipient=recipient if recipient is not None else self.recipient(delivery),
            parts=self.parts(delivery),
            date=date if date is not None else datetime.now(UTC),
            boundary=boundary,
        )

    def preview(self, delivery: Delivery) -> dict[str, str]:
        recipient = self.recipient(delivery)
        parts = self.parts(delivery)
        shown = {"from": str(self.sender), "to": str(recipient)}
        if self.reply_to is not None:
            shown["reply-to"] = str(self.reply_to)
        shown.update(subject=parts.subject, text=parts.text)
        if parts.html is not None:
            shown["html"] = parts.html
        return shown

    # -- sending -----------------------------------------------------------------------

    async def send(self, delivery: Delivery) -> None:
        recipient = self.recipient(delivery)
        data = self.data(delivery, recipient)
        if self.config.backend == "outbox":
            await asyncio.to_thread(self._write_outbox, delivery.id, data)
            return
        if self._pool is None:
            raise TransientError("channel not started")
        await self._pool.send(self.sender.addr_spec, recipient.addr_spec, data)

    def _write_outbox(self, delivery_id: str, data: bytes) -> None:
        """``<outbox>/<delivery id>.eml``, atomically: a retry replaces, never duplicates."""
        path = self.outbox / f"{delivery_id}.eml"
        tmp = self.outbox / f".{delivery_id}.eml.tmp"
        try:
            self.outbox.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise TransientError(f"cannot write {path}: {exc.strerror or exc}") from None

    def outbox_path(self, delivery: Delivery) -> Path:
        return self.outbox / f"{delivery.id}.eml"


@hookimpl
def tocsin_register_channels() -> Sequence[type[Channel[Any]]]:
    return [Email]


__all__ = ["Email", "EmailConfig", "html_to_text"]
