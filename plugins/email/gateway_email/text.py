"""A readable plain-text rendering of an HTML email, for its ``text/plain`` part.

Used when a notification has ``email.html.j2`` but no ``email.txt.j2``. It keeps what a
reader needs: paragraphs (blank lines), line breaks, headings (underlined), list bullets
and numbers, link targets (``mon compte (https://...)``), image alt texts, and tables
(aligned columns for data tables; layout tables, the usual skeleton of an HTML email,
are read cell by cell). Skipped: ``<head>``, ``<style>``, ``<script>``, comments (so
Outlook's conditional comments), and elements hidden with ``hidden`` or an inline
``display: none`` (pre-headers).

The standard library's ``html.parser`` builds a small tree first, closing the tags HTML
lets authors leave open (``<p>``, ``<li>``, ``<td>``, ``<tr>``...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

_VOID = frozenset(
    {
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    }
)
_SKIP = frozenset(
    {"head", "title", "style", "script", "template", "noscript", "object", "iframe", "svg"}
)
#: Elements that end an open <p> (HTML's implied end tag).
_CLOSES_P = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "center",
        "details",
        "div",
        "dl",
        "fieldset",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "ul",
    }
)
#: Blocks separated from their neighbours by a blank line.
_PARAGRAPHS = frozenset({"p", "h3", "h4", "h5", "h6", "dl", "figure", "address", "center"})
#: Blocks that start on a new line.
_LINES = frozenset(
    {
        "div",
        "section",
        "article",
        "header",
        "footer",
        "main",
        "nav",
        "aside",
        "form",
        "fieldset",
        "details",
        "summary",
        "dt",
        "dd",
        "caption",
        "figcaption",
        "legend",
        "li",
        "tr",
    }
)
_HEADING_RULES = {"h1": "=", "h2": "-"}
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
#: HTML's collapsible white space; not Python's \s, which would eat no-break spaces
#: (``1 234,50 €`` must keep its U+202F / U+00A0).
_HTML_SPACE = re.compile(r"[ \t\n\r\f]+")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:(//)?", re.IGNORECASE)


@dataclass
class _Node:
    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[_Node | str] = field(default_factory=list)


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = _Node("#root")
        self.stack = [self.root]

    def _close_back_to(self, tag: str, boundaries: frozenset[str]) -> None:
        """Close an open ``tag`` unless a boundary element was opened after it."""
        for i in range(len(self.stack) - 1, 0, -1):
            open_tag = self.stack[i].tag
            if open_tag == tag:
                del self.stack[i:]
                return
            if open_tag in boundaries:
                return

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _CLOSES_P and self.stack[-1].tag == "p":
            self.stack.pop()
        if tag == "li":
            self._close_back_to("li", frozenset({"ul", "ol"}))
        elif tag in ("td", "th"):
            self._close_back_to("td", frozenset({"tr", "table"}))
            self._close_back_to("th", frozenset({"tr", "table"}))
        elif tag == "tr":
            self._close_back_to("tr", frozenset({"table"}))
        elif tag in ("dt", "dd"):
            self._close_back_to("dt", frozenset({"dl"}))
            self._close_back_to("dd", frozenset({"dl"}))
        node = _Node(tag, {name: value or "" for name, value in attrs})
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return
        # A stray end tag: browsers ignore it, so do we.

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


class _Writer:
    """Lines of text, with collapsed white space and requested line breaks."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.current: str | None = None
        self.breaks = 0  # line breaks owed before the next text
        self.space = False  # a space owed before the next word
        self.prefix = ""  # indentation of every line (lists, quotes)
        self.first_prefix: str | None = None  # the next line's prefix (a list marker)
        self.list_depth = 0
        self.gap_prefix = ""  # the prefix of owed blank lines (none inside a quote's edge)

    def _start_line(self) -> str:
        if self.current is None:
            if self.lines:
                self.lines.extend([self.gap_prefix.rstrip()] * max(self.breaks - 1, 0))
            self.current = self.prefix if self.first_prefix is None else self.first_prefix
            self.first_prefix = None
            self.breaks = 0
            self.space = False
        return self.current

    def write(self, text: str) -> None:
        text = _HTML_SPACE.sub(" ", text)
        if not text.strip(" "):
            if text and self.current is not None:
                self.space = True
            return
        if text.startswith(" ") and self.current is not None:
            self.space = True
        current = self._start_line()
        if self.space and not current.endswith(" ") and current != self.prefix:
            current += " "
        self.current = current + text.strip(" ")
        self.space = text.endswith(" ")

    def newline(self, count: int = 1) -> None:
        """At least ``count`` line breaks before the next text (2: a blank line)."""
        if self.list_depth:
            count = 1
        if self.current is not None:
            self.lines.append(self.current.rstrip())
            self.current = None
            self.breaks = count
            self.gap_prefix = self.prefix
        else:
            self.breaks = max(self.breaks, count)
            self.gap_prefix = min(
                self.gap_prefix, self.prefix, key=len
            )  # nested: one holds the other
        self.space = False

    def br(self) -> None:
        if self.current is not None:
            self.newline(1)
        elif self.lines:
            self.breaks += 1

    def line(self, text: str) -> None:
        """One line as it is (tables, preformatted text, headings)."""
        if not text:
            self.newline(2)
            return
        self.current = self._start_line() + text
        self.newline(1)

    def text(self) -> str:
        lines = [*self.lines]
        if self.current is not None:
            lines.append(self.current.rstrip())
        while lines and not lines[0].strip():
            lines.pop(0)
        while lines and not lines[-1].strip():
            lines.pop()
        return "\n".join(lines)


def _hidden(node: _Node) -> bool:
    return "hidden" in node.attrs or bool(_HIDDEN_STYLE.search(node.attrs.get("style", "")))


def _same_target(text: str, url: str) -> bool:
    def bare(value: str) -> str:
        return _SCHEME.sub("", value.strip()).rstrip("/").lower()

    return bare(text) == bare(url)


def _all_text(node: _Node) -> str:
    return "".join(c if isinstance(c, str) else _all_text(c) for c in node.children)


class _Renderer:
    def fragment(self, node: _Node) -> list[str]:
        writer = _Writer()
        self.children(node, writer)
        text = writer.text()
        return text.split("\n") if text else []

    def children(self, node: _Node, w: _Writer) -> None:
        for child in node.children:
            if isinstance(child, str):
                w.write(child)
            else:
                self.element(child, w)

    def element(self, node: _Node, w: _Writer) -> None:
        tag = node.tag
        if tag in _SKIP or _hidden(node):
            return
        if tag == "br":
            w.br()
        elif tag == "img":
            alt = node.attrs.get("alt", "").strip()
            if alt:
                w.write(alt)
        elif tag == "hr":
            w.newline(2)
            w.line("-" * 40)
            w.newline(2)
        elif tag == "a":
            self.link(node, w)
        elif tag in ("h1", "h2"):
            lines = self.fragment(node)
            w.newline(2)
            for line in lines:
                w.line(line)
            if lines:
                w.line(_HEADING_RULES[tag] * max(len(line) for line in lines))
            w.newline(2)
        elif tag in ("ul", "ol"):
            self.list(node, w)
        elif tag == "table":
            self.table(node, w)
        elif tag == "pre":
            w.newline(2)
            for line in _all_text(node).strip("\n").split("\n"):
                w.line(line.rstrip() or " ")
            w.newline(2)
        elif tag == "blockquote":
            w.newline(2)
            saved = w.prefix
            w.prefix += "> "
            self.children(node, w)
            w.prefix = saved
            w.newline(2)
        else:
            gap = 2 if tag in _PARAGRAPHS else 1 if tag in _LINES else 0
            if gap:
                w.newline(gap)
            self.children(node, w)
            if gap:
                w.newline(gap)

    def link(self, node: _Node, w: _Writer) -> None:
        label = " ".join(self.fragment(node))
        href = node.attrs.get("href", "").strip()
        target = href
        lowered = href.lower()
        if lowered.startswith(("mailto:", "tel:")):
            target = href.split(":", 1)[1].split("?", 1)[0]
        show = bool(target) and not lowered.startswith(("#", "javascript:"))
        if label:
            w.write(label)
            if show and not _same_target(label, target):
                w.write(f" ({target})")
        elif show:
            w.write(target)

    def list(self, node: _Node, w: _Writer) -> None:
        ordered = node.tag == "ol"
        start = node.attrs.get("start", "1")
        number = int(start) if start.isdigit() else 1
        w.newline(2)
        for child in node.children:
            if isinstance(child, str):
                w.write(child)
                continue
            if child.tag != "li":
                self.element(child, w)
                continue
            if _hidden(child):
                continue
            marker = f"{number}. " if ordered else "- "
            number += 1
            saved = w.prefix
            w.newline(1)
            w.first_prefix = saved + marker
            w.prefix = saved + " " * len(marker)
            w.list_depth += 1
            self.children(child, w)
            w.list_depth -= 1
            w.newline(1)
            w.first_prefix = None  # an empty item writes nothing
            w.prefix = saved
        w.newline(2)

    def table(self, node: _Node, w: _Writer) -> None:
        rows: list[list[list[str]]] = []
        for tr in _rows(node):
            rows.append(
                [
                    self.fragment(cell)
                    for cell in tr.children
                    if isinstance(cell, _Node) and cell.tag in ("td", "th") and not _hidden(cell)
                ]
            )
        w.newline(2)
        for caption in node.children:
            if isinstance(caption, _Node) and caption.tag == "caption":
                for line in self.fragment(caption):
                    w.line(line)
        if _is_grid(rows):
            for line in _grid(rows):
                w.line(line)
        else:  # a layout table: each cell is a block of its own
            for row in rows:
                for cell in row:
                    if not cell:
                        continue
                    gap = 2 if len(cell) > 1 else 1
                    w.newline(gap)
                    for line in cell:
                        w.line(line)
                    w.newline(gap)
        w.newline(2)


def _rows(table: _Node) -> list[_Node]:
    rows = []
    for child in table.children:
        if not isinstance(child, _Node):
            continue
        if child.tag == "tr":
            rows.append(child)
        elif child.tag in ("thead", "tbody", "tfoot"):
            rows.extend(c for c in child.children if isinstance(c, _Node) and c.tag == "tr")
    return rows


def _is_grid(rows: list[list[list[str]]]) -> bool:
    """A data table: one line per cell and at least two filled columns somewhere."""
    if any(len(cell) > 1 for row in rows for cell in row):
        return False
    return any(sum(1 for cell in row if cell) >= 2 for row in rows)


def _grid(rows: list[list[list[str]]]) -> list[str]:
    cells = [[cell[0] if cell else "" for cell in row] for row in rows]
    width = max(len(row) for row in cells)
    cells = [row + [""] * (width - len(row)) for row in cells]
    # Spacer columns (empty in every row) are layout, not data.
    keep = [i for i in range(width) if any(row[i] for row in cells)]
    cells = [[row[i] for i in keep] for row in cells if any(row)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(keep))]
    return [
        "  ".join(cell.ljust(n) for cell, n in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]


def html_to_text(html: str) -> str:
    """The text a reader would take from ``html``, ending with one newline."""
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    text = _Renderer().fragment(builder.root)
    return "\n".join(text) + "\n" if text else ""
