"""Templates: a Jinja2 sandbox with StrictUndefined, autoescaping HTML parts only.

Layout: ``<templates>/<notification>/<locale>/<part>.j2`` with a locale-free fallback
``<templates>/<notification>/<part>.j2``. Locale fallback: ``fr-BE`` -> ``fr`` ->
the conf's default locale -> no locale.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from .brand import Brand
from .errors import PermanentError


class TemplateFailure(PermanentError):
    """A template failed to render: the delivery fails for good, with template and line.

    ``template`` (the file name under the templates folder), ``line`` and ``detail`` (the
    reason alone) let ``tocsin check`` / ``tocsin render`` print ``file: line N: reason``.
    """

    def __init__(
        self,
        reason: str,
        *,
        template: str | None = None,
        line: int | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.template = template
        self.line = line
        self.detail = detail if detail is not None else reason


def _autoescape(name: str | None) -> bool:
    return bool(name) and (name.endswith(".html.j2") or name.endswith(".htm.j2"))  # type: ignore[union-attr]


def _line_of(exc: BaseException, template_name: str) -> int | None:
    """Jinja rewrites tracebacks so frames point at template lines; find ours."""
    lineno = getattr(exc, "lineno", None)
    if isinstance(lineno, int):
        return lineno
    found = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.endswith(template_name):
            found = frame.lineno
    return found


def _failure(exc: BaseException, name: str, detail: str) -> TemplateFailure:
    line = _line_of(exc, name)
    where = f"{name}, line {line}" if line else name
    return TemplateFailure(f"template {where}: {detail}", template=name, line=line, detail=detail)


def locale_chain(locale: str | None, default: str) -> list[str]:
    chain: list[str] = []
    for candidate in (locale, default):
        if not candidate:
            continue
        tag = candidate.replace("_", "-")
        for item in (tag, tag.split("-")[0]):
            if item not in chain:
                chain.append(item)
    return chain


#: Where dates and times are shown when neither the template context (``timezone``) nor
#: the filter (``tz=``) says otherwise.
DEFAULT_TIMEZONE = "Europe/Paris"


class Templates:
    def __init__(
        self,
        root: Path,
        default_locale: str,
        filters: Mapping[str, Callable[..., Any]],
        default_timezone: str = DEFAULT_TIMEZONE,
        brand: Brand | None = None,
    ) -> None:
        self.root = root
        self.brand = brand or Brand()
        self.default_locale = default_locale
        self.env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader(str(root)),
            undefined=jinja2.StrictUndefined,
            autoescape=_autoescape,
            keep_trailing_newline=False,
            auto_reload=False,
        )
        self.env.filters.update(filters)
        # Locale-aware filters fall back to these when the context's `locale` is None.
        self.env.globals["default_locale"] = default_locale
        self.env.globals["default_timezone"] = default_timezone
        # Templates rendered without a locale folder (from_string, ERP bodies) see this.
        self.env.globals["brand"] = self.brand.for_locale(None, default_locale)

    def from_string(self, source: str) -> jinja2.Template:
        return self.env.from_string(source)

    def find(self, notification: str, part: str, locale: str | None) -> str | None:
        """The template file name to use.

        The locale folder is chosen once per notification (the first of the fallback
        chain that exists), and every part comes from it, else from the notification's
        own folder: an English email never borrows its HTML from the French folder.
        """
        for loc in locale_chain(locale, self.default_locale):
            if (self.root / notification / loc).is_dir():
                name = f"{notification}/{loc}/{part}.j2"
                if (self.root / name).is_file():
                    return name
                break
        name = f"{notification}/{part}.j2"
        return name if (self.root / name).is_file() else None

    def has_part(self, notification: str, part: str) -> bool:
        folder = self.root / notification
        return (folder / f"{part}.j2").is_file() or any(folder.glob(f"*/{part}.j2"))

    def render(
        self, notification: str, part: str, locale: str | None, context: Mapping[str, Any]
    ) -> str:
        name = self.find(notification, part, locale)
        if name is None:
            detail = f"no {part}.j2 for locale {locale or self.default_locale}"
            raise TemplateFailure(
                f"template {notification}: {detail}", template=notification, detail=detail
            )
        return self.render_file(name, context)

    def render_file(self, name: str, context: Mapping[str, Any]) -> str:
        """Render ``name`` as ``find`` returned it (a caller that looked it up once)."""
        # The brand in the language the text is written in: the locale folder found, which
        # is not the delivery's locale when a notification lacks that language.
        parts = name.split("/")
        folder = parts[1] if len(parts) == 3 else None
        locale_of_text = folder or context.get("locale")
        context = {**context, "brand": self.brand.for_locale(locale_of_text, self.default_locale)}
        try:
            return self.env.get_template(name).render(context)
        except jinja2.TemplateError as exc:
            raise _failure(exc, name, exc.message or str(exc)) from None
        except Exception as exc:  # a filter or a sandboxed call raising
            raise _failure(exc, name, f"{type(exc).__name__}: {exc}") from None

    def all_files(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.rglob("*.j2")):
            yield path.relative_to(self.root).as_posix()

    def compile_all(self) -> list[str]:
        """Problems of every template file: ``path, line N: reason``."""
        problems = []
        for name in self.all_files():
            try:
                self.env.get_template(name)
            except jinja2.TemplateSyntaxError as exc:
                problems.append(f"{self.root / name}: line {exc.lineno}: {exc.message}")
            except jinja2.TemplateError as exc:
                problems.append(f"{self.root / name}: {exc}")
        return problems
