"""An event's whole story on one page: the event, each delivery with every attempt, the
ERP calls, the scenario instances it touched (``ops.timeline``), and what each message
said, rendered by the channel's ``preview`` exactly as ``tocsin render`` does.

Personal data: a ``read`` token sees the customer's contact data masked (name, email,
phone, in the event and in every rendered part; any email, phone or IBAN anywhere) with
the masks the logs use (gateway.logs.mask); an ``operate`` token sees them in clear, as
it may act on them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from ..admin_events import show_event
from ..adminapi import ops
from ..event import Event, EventInvalid, decode_event
from ..logs.mask import Known, known_values, mask_text
from ..plan import Plan
from ..privacy.recipients import template_version
from ..render import describe_failure, has_preview, make_delivery
from ..router import plan_deliveries
from .common import acting, page, params, session_of, state


@dataclass
class Message:
    """One delivery's content as it renders today."""

    channel: str
    type_name: str
    template: str | None
    locale: str | None
    parts: dict[str, str] = field(default_factory=dict)
    #: Why nothing is shown (no preview for this channel, a template failing...).
    note: str | None = None
    #: The template's files changed since this delivery was sent.
    changed: bool = False


def _masker(event: Event | None, clear: bool) -> Known | None:
    """``None``: show as is (an operate token); else the customer's values to mask."""
    if clear:
        return None
    c = event.customer if event is not None else None
    if c is None:
        return known_values([], [], [])
    return known_values([c.name], [c.email], [c.phone])


def masked(text: str, known: Known | None) -> str:
    return text if known is None else mask_text(text, known)


def render_message(
    plan: Plan,
    event: Event,
    raw: bytes,
    record: dict[str, Any],
    planned: dict[str, Any],
    known: Known | None,
) -> Message:
    """What this delivery's channel would send for it now: the router's own delivery
    (same id) when today's rules still make it, else one to the event's customer with
    the record's template and locale, as ``tocsin render`` builds it."""
    name = str(record.get("channel", ""))
    channel = plan.channels.get(name)
    template, locale = record.get("template"), record.get("locale")
    if channel is None:
        return Message(name, "?", template, locale, note=f"no channel {name!r} in the conf now")
    message = Message(name, channel.type_name, template, locale)
    if not has_preview(channel):
        message.note = f"{channel.type_name} channels have no preview"
        return message
    delivery = planned.get(str(record.get("id")))
    if delivery is None:
        delivery = msgspec.structs.replace(
            make_delivery(event, raw, template or "", name, locale),
            id=str(record.get("id")),
            rule=str(record.get("rule", "")),
            template=template,
        )
    try:
        parts = channel.preview(delivery)
    except NotImplementedError:
        message.note = f"{channel.type_name} channels have no preview"
        return message
    except Exception as exc:
        message.note = f"does not render now: {describe_failure(exc, plan)}"
        return message
    message.parts = {label: masked(text, known) for label, text in parts.items()}
    sent_version = record.get("template_version")
    if template and sent_version:
        message.changed = template_version(plan.templates.root, template) != sent_version
    return message


async def event_page(request: web.Request) -> web.StreamResponse:
    params(request, ())
    console = state(request)
    ctx = acting(request)
    session = session_of(request)
    event_id = request.match_info["event_id"]
    story = await ops.timeline(ctx, event_id)
    stored = await show_event(ctx.redis, ctx.layout, event_id, ctx.archive)
    event: Event | None = None
    raw = stored.raw if stored is not None else b""
    try:
        event = decode_event(raw)
    except (EventInvalid, msgspec.DecodeError, ValueError):
        event = None
    known = _masker(event, clear=session.can_operate)
    event_json = masked(
        json.dumps(story["event"].get("event"), indent=2, ensure_ascii=False), known
    )
    messages: dict[str, Message] = {}
    if event is not None:
        planned = {d.id: d for d in plan_deliveries(console.plan.rules, event, raw)}
        for record in story["deliveries"]:
            if record.get("status") == "queued" and "channel" not in record:
                continue
            messages[record["id"]] = render_message(
                console.plan, event, raw, record, planned, known
            )
    return page(
        request,
        "event.html",
        story=story,
        event_json=event_json,
        messages=messages,
        masked_view=known is not None,
        customer=event.customer if event is not None else None,
        mask=lambda text: masked(str(text), known),
    )
