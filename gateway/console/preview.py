"""Template preview: a template, a locale and a sample event (the conf's ``examples/``
folder), rendered by ``gateway.render.preview_template``, the code behind ``tocsin
render``: the page shows its text byte for byte, plus the email's HTML as a browser draws
it, in a sandboxed iframe (no scripts, no same-origin, no remote content).

Samples are fictional (they ship with the conf), so nothing is masked here.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from ..adminapi import BadRequest
from ..plan import Plan
from ..render import Preview, RenderError, format_preview, preview_template
from .common import page, params, state


def templates(plan: Plan) -> list[str]:
    root = plan.templates.root
    if not root.is_dir():
        return []
    # ``_layout`` and the like are partials, not notifications.
    return sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))
    )


def locales(plan: Plan, template: str) -> list[str]:
    folder = plan.templates.root / template
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and any(p.glob("*.j2")))


def samples(plan: Plan) -> list[Path]:
    folder = plan.conf.samples_dir
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


async def preview_page(request: web.Request) -> web.StreamResponse:
    q = params(request, ("template", "locale", "sample"))
    plan = state(request).plan
    names = templates(plan)
    files = {p.name: p for p in samples(plan)}
    template, locale, sample = q.get("template"), q.get("locale"), q.get("sample")
    # Only names the lists offer: the form never reaches outside the conf's folders.
    if template is not None and template not in names:
        raise BadRequest("template", f"no template {template!r} in {plan.templates.root}")
    if sample is not None and sample not in files:
        raise BadRequest("sample", f"no sample {sample!r} in {plan.conf.samples_dir}")
    known_locales = locales(plan, template) if template else []
    if locale is not None and template is not None and locale not in known_locales:
        raise BadRequest(
            "locale", f"template {template!r} has locales {', '.join(known_locales) or 'none'}"
        )
    previews: list[Preview] = []
    problems: list[str] = []
    text = ""
    if template is not None and sample is not None:
        try:
            previews, problems = preview_template(plan, template, files[sample], locale=locale)
        except RenderError as exc:
            problems = exc.lines
        text = "\n".join(format_preview(p, plan.templates.default_locale) for p in previews)
    shown = [(p, format_preview(p, plan.templates.default_locale)) for p in previews]
    return page(
        request,
        "preview.html",
        templates=names,
        samples=sorted(files),
        locales=known_locales,
        template=template or "",
        locale=locale or "",
        sample=sample or "",
        shown=shown,
        text=text,
        problems=problems,
    )
