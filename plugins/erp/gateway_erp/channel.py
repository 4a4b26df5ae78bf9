"""The ``erp`` channel: one ERP action, through one connector, per configured channel."""

from __future__ import annotations

import logging
import ssl
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
import msgspec

from gateway import (
    Action,
    Channel,
    ChannelContext,
    Delivery,
    PermanentError,
    TransientError,
    template_context,
)

from . import actions
from .booking import Booking, booking, invoice_ref, optional
from .config import DEFAULT_NOTE, ErpConfig, RestOptions
from .connector import Connector, InvoiceConnector, Step
from .dolibarr import Dolibarr
from .erpnext import ErpNext
from .odoo import Odoo
from .rest import Rest
from .transport import Transport

log = logging.getLogger("tocsin.erp")

#: The internal event a refused delivery raises; rules route it to accounting.
NOTIFY = "erp.sync_failed"
#: The template part an action's ``template`` provides: a note's text, or a call's body.
TEMPLATE_PART = "erp"
#: A send makes at most this many requests (Odoo JSON-RPC: authenticate, invoice,
#: payment, wizard, confirm, read back); ``send_timeout`` covers them all.
MAX_REQUESTS = 6


def make_connector(config: ErpConfig, transport: Transport) -> Connector:
    if config.odoo is not None:
        return Odoo(transport, config.odoo)
    if config.dolibarr is not None:
        return Dolibarr(transport, config.dolibarr)
    if config.erpnext is not None:
        return ErpNext(transport, config.erpnext)
    return Rest(transport, config.rest or RestOptions())


class ErpChannel(Channel[ErpConfig]):
    type_name = "erp"
    erp_call = True
    config_type = ErpConfig

    def __init__(self, name: str, config: ErpConfig, context: ChannelContext) -> None:
        super().__init__(name, config, context)
        problems = config.problems(name)
        # The URL is fixed: an IP literal the SSRF guard refuses is a conf error, reported
        # once by `tocsin check`, not a dead letter per payment (names are checked when
        # they resolve, on every connection).
        refusal = context.outbound.url_refusal(config.url) if not problems else None
        if refusal is not None:
            problems.append(f"url: {refusal}")
        try:
            self.zone = ZoneInfo(config.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"timezone: {config.timezone!r} is not a zone such as Europe/Paris")
            self.zone = ZoneInfo("UTC")
        self._note: jinja2.Template | None = None
        self._path: jinja2.Template | None = None
        self._body: jinja2.Template | None = None
        if config.action == "flag_invoice":
            self._note = self._compile("note", config.note or DEFAULT_NOTE, problems)
        if config.call is not None:
            self._path = self._compile("call.path", config.call.path, problems)
            if config.call.body:
                self._body = self._compile("call.body", config.call.body, problems)
        trusted = self._trust(problems)
        if problems:
            raise ValueError("; ".join(problems))
        self.transport = Transport(
            config.url,
            outbound=context.outbound,
            timeout=float(config.timeout),
            max_connections=config.max_connections,
            ssl_context=trusted,
        )
        self.connector = make_connector(config, self.transport)

    def _trust(self, problems: list[str]) -> ssl.SSLContext | None:
        """The CAs of ``ca_file`` (verification stays on), read now so ``tocsin check``
        reports a missing or unreadable file."""
        if not self.config.ca_file:
            return None
        path = self.context.data_dir / self.config.ca_file
        try:
            return ssl.create_default_context(cafile=str(path))
        except (OSError, ssl.SSLError) as exc:
            problems.append(f"ca_file: cannot read CA certificates from {path}: {exc}")
            return None

    def _compile(self, where: str, source: str, problems: list[str]) -> jinja2.Template | None:
        try:
            return self.context.templates.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            problems.append(f"{where}: line {exc.lineno}: {exc.message}")
            return None

    @property
    def send_timeout(self) -> float:
        return float(self.config.timeout) * MAX_REQUESTS + 1.0

    def check_action(self, action: Action) -> list[str]:
        problems = []
        if action.to:
            problems.append("to: an erp action acts in the ERP and sends to no one; remove it")
        if action.template:
            if self.config.action == "register_payment":
                problems.append("template: register_payment renders no template; remove it")
            elif not self.context.templates.has_part(action.template, TEMPLATE_PART):
                problems.append(f"template: {action.template!r} has no {TEMPLATE_PART}.j2")
        return problems

    async def start(self) -> None:
        await self.transport.start()

    async def close(self) -> None:
        await self.transport.close()

    # -- what the event says ---------------------------------------------------------------

    def _booking(self, context: dict[str, Any]) -> Booking:
        return booking(context, self.config.fields, self.zone, self.config.reference_prefix)

    def _erp_values(self, context: dict[str, Any]) -> dict[str, Any]:
        values = optional(context, self.config.fields)
        if values["reference"] is not None:
            values["reference"] = self.config.reference_prefix + values["reference"]
        return values

    def _details(self, context: dict[str, Any]) -> dict[str, Any]:
        """What ``erp.sync_failed`` carries besides the reason (amounts in minor units)."""
        values = self._erp_values(context)
        return {
            "connector": self.config.connector,
            "action": self.config.action,
            "erp": self.connector.describe(),
            "invoice_ref": values["invoice_ref"],
            "payment_reference": values["reference"],
            "amount": values["amount_minor"],
            "currency": values["currency"],
            "amount_decimal": values["amount"],
        }

    def _render(
        self,
        where: str,
        template: jinja2.Template | None,
        delivery: Delivery,
        context: Any,
        *,
        part: bool = True,
    ) -> str:
        """The action's ``erp.j2`` when it names a template (and ``part``), else the conf's
        inline template."""
        if part and delivery.template is not None:
            return self.context.templates.render(
                delivery.template, TEMPLATE_PART, delivery.locale, context
            )
        if template is None:
            return ""
        try:
            return template.render(context)
        except jinja2.TemplateError as exc:
            raise PermanentError(f"channels.{self.name}.{where}: {exc}") from None
        except Exception as exc:  # a filter raising
            raise PermanentError(
                f"channels.{self.name}.{where}: {type(exc).__name__}: {exc}"
            ) from None

    def _templating(self, delivery: Delivery) -> tuple[dict[str, Any], dict[str, Any]]:
        event = delivery.decode_event()
        plain = event.to_context()
        context = template_context(delivery, event)
        context["erp"] = self._erp_values(plain)
        return plain, context

    def _note_text(self, delivery: Delivery, context: dict[str, Any]) -> tuple[str, str]:
        marker = f"[tocsin {delivery.id}]"
        text = self._render("note", self._note, delivery, context).strip()
        if not text:
            raise PermanentError(f"channels.{self.name}: the note rendered empty")
        return f"{text}\n{marker}", marker

    def _call_request(
        self, delivery: Delivery, context: dict[str, Any]
    ) -> tuple[str, str, bytes | None]:
        assert self.config.call is not None
        # The path always comes from the conf, even when the action names a body template.
        path = self._render("call.path", self._path, delivery, context, part=False).strip()
        if not path.startswith("/") or any(c.isspace() or ord(c) < 32 for c in path):
            raise PermanentError(
                f"channels.{self.name}.call.path rendered {path[:80]!r}: a path starts with / "
                "and holds no spaces (use the urlencode filter on values)"
            )
        self.transport.url(path)  # refuses a path that would leave the ERP's origin
        text = self._render("call.body", self._body, delivery, context).strip()
        if not text:
            return self.config.call.method, path, None
        try:
            msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            source = (
                f"template {delivery.template}/{TEMPLATE_PART}.j2"
                if delivery.template
                else f"channels.{self.name}.call.body"
            )
            raise PermanentError(f"{source} did not render valid JSON: {exc}") from None
        return self.config.call.method, path, text.encode()

    def _invoice_connector(self) -> InvoiceConnector:
        assert isinstance(self.connector, InvoiceConnector)  # the conf checks guarantee it
        return self.connector

    # -- send ------------------------------------------------------------------------------

    async def send(self, delivery: Delivery) -> str:
        plain: dict[str, Any] = {}
        try:
            plain, context = self._templating(delivery)
            outcome = await self._perform(delivery, plain, context)
        except (PermanentError, TransientError) as exc:
            # Every refusal reaches staff, and so does an ERP still failing when retries
            # run out: the core turns either into an erp.sync_failed event.
            if exc.notify is None:
                exc.notify = NOTIFY
                exc.details = {**self._details(plain), **exc.details}
            raise
        log.info("%s: delivery %s: %s", self.name, delivery.id, outcome)
        return outcome

    async def _perform(
        self, delivery: Delivery, plain: dict[str, Any], context: dict[str, Any]
    ) -> str:
        action = self.config.action
        if action == "register_payment":
            return await actions.register_payment(self._invoice_connector(), self._booking(plain))
        if action == "flag_invoice":
            ref = invoice_ref(plain, self.config.fields)
            text, marker = self._note_text(delivery, context)
            return await actions.flag_invoice(self._invoice_connector(), ref, text, marker)
        method, path, body = self._call_request(delivery, context)
        return await actions.call(
            self.transport, self.connector.auth_headers(), method, path, body, delivery.id
        )

    # -- preview ---------------------------------------------------------------------------

    def preview(self, delivery: Delivery) -> dict[str, str]:
        plain, context = self._templating(delivery)
        parts = {"erp": f"{self.connector.describe()}, action {self.config.action}"}
        steps: list[Step]
        if self.config.action == "register_payment":
            planned = self._booking(plain)
            parts["payment"] = (
                f"{planned.amount} {planned.currency} on invoice {planned.invoice_ref}, "
                f"reference {planned.reference}, dated {planned.paid_on.isoformat()}"
            )
            steps = self._invoice_connector().describe_payment(planned)
        elif self.config.action == "flag_invoice":
            ref = invoice_ref(plain, self.config.fields)
            text, marker = self._note_text(delivery, context)
            parts["note"] = text
            steps = self._invoice_connector().describe_note(ref, text, marker)
        else:
            method, path, body = self._call_request(delivery, context)
            url = self.transport.url(path)
            parts["request"] = f"{method} {url} (Idempotency-Key: {delivery.id})"
            if body is not None:
                parts["json"] = body.decode()
            return parts
        for n, step in enumerate(steps, 1):
            parts[f"{n}. {step.label}"] = step.text
        return parts
