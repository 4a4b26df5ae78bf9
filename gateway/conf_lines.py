"""Line numbers for conf problems: ``file: path: reason`` becomes ``file:LINE: path: reason``.

``tomllib`` gives a position only for syntax errors; what the conf means is checked on
the decoded data, by dotted path (``scenarios.x.steps[0].after``). This reads the TOML
text again to find where each key is written: ``[table]``, ``[[array]]`` headers, dotted
keys, inline tables and arrays. It only runs on files ``tomllib`` already accepted; a
path it cannot place keeps no line rather than a wrong one.
"""

from __future__ import annotations

import re
from pathlib import Path

Key = tuple[str | int, ...]

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_PROBLEM = re.compile(
    r"^(?P<file>[^:\n]+?\.toml)(?::(?P<line>\d+))?: "
    r"(?P<path>[A-Za-z0-9_\-.\[\]]+): (?P<reason>.*)$",
    re.S,
)
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")
_LEADING_FIELD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*): ")
_ENV_UNSET = re.compile(r"^environment variable \w+ is not set$")


class _Scanner:
    """A small TOML reader that records the line of every key and array element."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.lines: dict[Key, int] = {}
        #: ``[[a.b]]`` arrays (indexes resolved) and how many tables each holds so far.
        self.arrays: dict[Key, int] = {}

    def line(self) -> int:
        return self.text.count("\n", 0, self.pos) + 1

    def record(self, key: Key, line: int) -> None:
        self.lines.setdefault(key, line)

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos : self.pos + n]

    def skip_blank(self, newlines: bool) -> None:
        """Spaces, comments and (inside arrays, or between statements) newlines."""
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in " \t\r" or (newlines and char == "\n"):
                self.pos += 1
            elif char == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    def string(self) -> str:
        for quote in ('"""', "'''"):
            if self.peek(3) == quote:
                end = self.pos + 3
                while True:
                    end = self.text.index(quote, end)
                    if quote == '"""' and _escaped(self.text, end):
                        end += 1
                        continue
                    break
                # A closing quote run may hold up to two quotes of the content.
                while self.text[end + 3 : end + 4] == quote[0]:
                    end += 1
                value = self.text[self.pos + 3 : end]
                self.pos = end + 3
                return value
        quote = self.text[self.pos]
        end = self.pos + 1
        while self.text[end] != quote or (quote == '"' and _escaped(self.text, end)):
            end += 1
        value = self.text[self.pos + 1 : end]
        self.pos = end + 1
        if quote == '"' and "\\" in value:
            value = value.encode("utf-8").decode("unicode_escape", errors="replace")
        return value

    def key(self) -> list[str]:
        parts = []
        while True:
            self.skip_blank(False)
            if self.peek() in ('"', "'"):
                parts.append(self.string())
            else:
                match = _BARE.match(self.text, self.pos)
                if match is None:
                    raise ValueError("not a key")
                parts.append(match.group())
                self.pos = match.end()
            self.skip_blank(False)
            if self.peek() != ".":
                return parts
            self.pos += 1

    def resolve(self, parts: list[str], whole: bool) -> Key:
        """Header keys with the current index of every ``[[array]]`` they go through."""
        out: list[str | int] = []
        for i, part in enumerate(parts):
            out.append(part)
            last = i == len(parts) - 1
            if tuple(out) in self.arrays and (whole or not last):
                out.append(self.arrays[tuple(out)] - 1)
        return tuple(out)

    def value(self, where: Key) -> None:
        self.skip_blank(False)
        char = self.peek()
        if char in ('"', "'"):
            self.string()
        elif char == "[":
            self.pos += 1
            index = 0
            while True:
                self.skip_blank(True)
                if self.peek() == "]":
                    self.pos += 1
                    return
                self.record((*where, index), self.line())
                self.value((*where, index))
                index += 1
                self.skip_blank(True)
                if self.peek() == ",":
                    self.pos += 1
        elif char == "{":
            self.pos += 1
            while True:
                self.skip_blank(False)
                if self.peek() == "}":
                    self.pos += 1
                    return
                self.pair(where)
                self.skip_blank(False)
                if self.peek() == ",":
                    self.pos += 1
        else:
            while self.pos < len(self.text) and self.text[self.pos] not in ",]}\n#":
                self.pos += 1

    def pair(self, table: Key) -> None:
        line = self.line()
        parts = self.key()
        for i in range(1, len(parts) + 1):
            self.record((*table, *parts[:i]), line)
        if self.peek() != "=":
            raise ValueError("not a key = value")
        self.pos += 1
        self.value((*table, *parts))

    def run(self) -> dict[Key, int]:
        table: Key = ()
        while True:
            self.skip_blank(True)
            if self.pos >= len(self.text):
                return self.lines
            line = self.line()
            if self.peek(2) == "[[":
                self.pos += 2
                parent = self.resolve(self.key(), whole=False)
                self.arrays[parent] = self.arrays.get(parent, 0) + 1
                table = (*parent, self.arrays[parent] - 1)
                self.pos += 2
            elif self.peek() == "[":
                self.pos += 1
                table = self.resolve(self.key(), whole=True)
                self.pos += 1
            else:
                self.pair(table)
                continue
            for i in range(1, len(table) + 1):
                self.record(table[:i], line)


def _escaped(text: str, at: int) -> bool:
    backslashes = 0
    while at - backslashes - 1 >= 0 and text[at - backslashes - 1] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


def key_lines(text: str) -> dict[Key, int]:
    """Line of each key path written in a TOML text (partial if the text surprises it)."""
    scanner = _Scanner(text)
    try:
        return scanner.run()
    except (ValueError, IndexError):
        return scanner.lines


def split_path(path: str) -> Key:
    """``scenarios.x.steps[0].after`` -> ``("scenarios", "x", "steps", 0, "after")``."""
    return tuple(name if name else int(index) for name, index in _PATH_PART.findall(path))


class LineFinder:
    """Finds where dotted paths are written, reading each file once."""

    def __init__(self) -> None:
        self._files: dict[str, dict[Key, int]] = {}

    def lines_of(self, file: str) -> dict[Key, int]:
        if file not in self._files:
            try:
                text = Path(file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                text = ""
            self._files[file] = key_lines(text)
        return self._files[file]

    def find(self, file: str, path: str, reason: str = "") -> int | None:
        """The line of ``path``, or of the nearest enclosing table that is written."""
        lines = self.lines_of(file)
        if not lines:
            return None
        key = split_path(path)
        # A plugin names the field in its reason ("channels.hook: url: ..."), msgspec
        # names an unknown key: point at that key's own line when it is written.
        field = _UNKNOWN_FIELD.search(reason) or _LEADING_FIELD.match(reason)
        if field is not None and (*key, field.group(1)) in lines:
            return lines[(*key, field.group(1))]
        while key:
            if key in lines:
                return lines[key]
            key = key[:-1]
        return None


def with_lines(problems: list[str], finder: LineFinder | None = None) -> list[str]:
    """Each ``file.toml: path: reason`` with the line the path is written on, where it
    can be found; and a value whose ``${VAR}`` is unset is reported for that only (what
    it left empty would otherwise be refused too)."""
    finder = finder or LineFinder()
    parsed = [(problem, _PROBLEM.match(problem)) for problem in problems]
    unset = {
        match.group("file", "path")
        for _, match in parsed
        if match is not None and _ENV_UNSET.match(match.group("reason"))
    }
    out = []
    for problem, match in parsed:
        if match is None or match.group("line") is not None:
            out.append(problem)
            continue
        file, path, reason = match.group("file", "path", "reason")
        if (file, path) in unset and not _ENV_UNSET.match(reason):
            continue
        line = finder.find(file, path, reason)
        out.append(problem if line is None else f"{file}:{line}: {path}: {reason}")
    return out
