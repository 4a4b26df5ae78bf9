"""Actions for ``operate`` tokens, each in two steps: a confirmation page (GET, which
changes nothing and says what will happen) and the form it holds (POST, with the
session's CSRF token). Each runs the admin API's own operation, which writes the audit
trail under the token's name: the console has no write path of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import msgspec
from aiohttp import web

from ..adminapi import AdminContext, BadRequest, ReplayFilter, bulk, ops
from ..history import STATUSES
from .common import PREFIX, acting, field, page, params, require_operate


@dataclass(frozen=True)
class Action:
    title: str
    #: What will happen, shown on the confirmation page (``{target}``, ``{scenario}``).
    explain: str
    run: Callable[[AdminContext, str, Callable[[str], str]], Awaitable[dict[str, Any]]]
    #: Extra form fields the confirmation page asks for: (name, label).
    asks: tuple[tuple[str, str], ...] = ()
    #: A checkbox: (name, label).
    option: tuple[str, str] | None = None


async def _retry(ctx: AdminContext, target: str, form: Callable[[str], str]) -> dict[str, Any]:
    return await ops.retry_now(ctx, target)


async def _replay_event(
    ctx: AdminContext, target: str, form: Callable[[str], str]
) -> dict[str, Any]:
    return await ops.replay_event(ctx, target, force=form("force") == "1")


async def _replay_dead(
    ctx: AdminContext, target: str, form: Callable[[str], str]
) -> dict[str, Any]:
    return await ops.replay_dead_letters(ctx, [target])


async def _cancel(ctx: AdminContext, target: str, form: Callable[[str], str]) -> dict[str, Any]:
    return await ops.cancel_instances(ctx, target, form("scenario") or None)


async def _disable(ctx: AdminContext, target: str, form: Callable[[str], str]) -> dict[str, Any]:
    return await ops.disable_endpoint(ctx, target, form("reason")[:200])


async def _enable(ctx: AdminContext, target: str, form: Callable[[str], str]) -> dict[str, Any]:
    return await ops.enable_endpoint(ctx, target)


async def _cancel_job(ctx: AdminContext, target: str, form: Callable[[str], str]) -> dict[str, Any]:
    return await bulk.cancel_job(ctx, target)


ACTIONS: dict[str, Action] = {
    "retry": Action(
        "Retry now",
        "Send delivery {target} at once instead of waiting for its next attempt. It keeps "
        "its attempt count and retry schedule; its history notes who sent it early.",
        _retry,
    ),
    "replay-event": Action(
        "Replay event",
        "Route event {target} again with today's rules and queue its deliveries. Without "
        "force, deliveries already delivered or waiting are skipped.",
        _replay_event,
        option=("force", "force: also send again what was delivered"),
    ),
    "replay-dead": Action(
        "Replay dead letter",
        "Queue dead-lettered delivery {target} again, with its webhook-id.",
        _replay_dead,
    ),
    "cancel-scenario": Action(
        "Cancel scenario",
        "Cancel the active scenario instances for key {target} ({scenario}): their pending "
        "steps will not fire.",
        _cancel,
    ),
    "disable": Action(
        "Disable endpoint",
        "Hold channel {target}'s jobs: workers stop sending them until it is enabled.",
        _disable,
        asks=(("reason", "reason (kept with the endpoint and in the audit trail)"),),
    ),
    "enable": Action(
        "Enable endpoint",
        "Let workers send channel {target}'s held jobs again.",
        _enable,
    ),
    "cancel-job": Action(
        "Cancel bulk replay",
        "Stop replay job {target}: what it queued stays queued, the rest is not sent.",
        _cancel_job,
    ),
}


def _action(request: web.Request) -> Action:
    name = request.match_info["action"]
    action = ACTIONS.get(name)
    if action is None:
        raise BadRequest("action", f"unknown action {name!r}; one of {', '.join(ACTIONS)}")
    return action


def _back(value: str | None) -> str:
    if value and value.startswith(PREFIX + "/") and "//" not in value and "\\" not in value:
        return value
    return PREFIX + "/"


async def confirm(request: web.Request) -> web.StreamResponse:
    q = params(request, ("target", "scenario", "back"))
    action = _action(request)
    require_operate(request)
    target = q.get("target")
    if target is None:
        raise BadRequest("target", "required: what the action applies to")
    text = action.explain.format(target=target, scenario=q.get("scenario", "every scenario"))
    return page(
        request,
        "confirm.html",
        name=request.match_info["action"],
        action=action,
        explain=text,
        target=target,
        scenario=q.get("scenario", ""),
        back=_back(q.get("back")),
    )


async def perform(request: web.Request) -> web.StreamResponse:
    params(request, ())
    action = _action(request)
    require_operate(request)
    target = field(request, "target")
    result = await action.run(acting(request), target, lambda name: field(request, name, False))
    return page(
        request,
        "done.html",
        action=action,
        target=target,
        result=result,
        back=_back(field(request, "back", required=False)),
    )


# -- bulk replay: count first (the dry run), then a background job -------------------------

FILTERS = ("event_id", "customer_id", "invoice_ref", "channel", "status", "since", "until")


def _filter(values: dict[str, str]) -> ReplayFilter:
    given: dict[str, Any] = {k: v for k, v in values.items() if k in FILTERS and v}
    if "status" in given and given["status"] not in STATUSES:
        raise BadRequest("status", f"one of {', '.join(STATUSES)}")
    for name in ("since", "until"):
        if name in given:
            try:
                given[name] = float(given[name])
            except ValueError:
                raise BadRequest(name, "epoch seconds") from None
    try:
        return msgspec.convert(given, ReplayFilter)
    except msgspec.ValidationError as exc:
        raise BadRequest("filter", str(exc)) from None


async def replay_count(request: web.Request) -> web.StreamResponse:
    q = params(request, FILTERS)
    require_operate(request)
    flt = _filter(q)
    counted = await bulk.dry_run(acting(request), flt)
    return page(request, "replay.html", filter=msgspec.to_builtins(flt), counted=counted)


async def replay_start(request: web.Request) -> web.StreamResponse:
    params(request, ())
    require_operate(request)
    flt = _filter({name: field(request, name, required=False) for name in FILTERS})
    expected = field(request, "count")
    job = await bulk.start_job(acting(request), flt)
    # The count confirmed is the dry run's: say so on the job's page if it moved since.
    raise web.HTTPSeeOther(
        f"{PREFIX}/replays/{quote(job['id'], safe='')}?confirmed={quote(expected, safe='')}"
    )
