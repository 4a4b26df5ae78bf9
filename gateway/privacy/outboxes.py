"""Local outbox files: erased by delivery id or content, trimmed by age.

Two shapes exist (plugins/email, plugins/sms): one file per delivery named
``<delivery id>.<ext>`` (email ``.eml``), and JSON lines with ``delivery_id`` and ``at``
(SMS). Outboxes are found under ``<data_dir>/outbox`` (both plugins' default folders)
and at the paths channel tables name (``outbox_dir``, ``[channels.X.outbox] path``).

A JSON-lines file is rewritten to a temporary file and renamed over the original; a
line a gateway appends meanwhile (to the old file) is carried over after the rename.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path

import msgspec

from ..conf import Conf
from .redact import contains


def outbox_roots(conf: Conf) -> list[Path]:
    roots = {conf.data_dir / "outbox"}
    for table in conf.channels.values():
        folder = table.options.get("outbox_dir")
        if isinstance(folder, str):
            roots.add(conf.data_dir / folder)
        nested = table.options.get("outbox")
        if isinstance(nested, dict) and isinstance(nested.get("path"), str):
            roots.add(conf.data_dir / nested["path"])
    return sorted(roots)


def outbox_files(roots: Iterable[Path]) -> Iterator[Path]:
    seen: set[Path] = set()
    for root in roots:
        candidates = [root] if root.is_file() else sorted(root.rglob("*")) if root.is_dir() else []
        for path in candidates:
            if path.is_file() and path not in seen and not path.name.startswith("."):
                seen.add(path)
                yield path


class _Line(msgspec.Struct):
    delivery_id: str | None = None
    at: str | None = None


_line = msgspec.json.Decoder(_Line)


def _line_time(raw: bytes) -> float | None:
    try:
        at = _line.decode(raw).at
        return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() if at else None
    except (msgspec.DecodeError, ValueError):
        return None


def _line_id(raw: bytes) -> str | None:
    try:
        return _line.decode(raw).delivery_id
    except msgspec.DecodeError:
        return None


def _rewrite(path: Path, drop: Callable[[bytes], bool], dry_run: bool) -> int:
    """Drop lines for which ``drop`` holds; returns how many (went, or would go)."""
    with path.open("rb") as old:
        kept, dropped = [], 0
        for raw in old:
            if raw.strip() and drop(raw):
                dropped += 1
            else:
                kept.append(raw)
        if dry_run or not dropped:
            return dropped
        tmp = path.with_name(f".{path.name}.rewrite")
        with tmp.open("wb") as new:
            new.writelines(kept)
            new.flush()
            os.fsync(new.fileno())
        os.replace(tmp, path)
        # A gateway that opened the old file before the rename appends there: carry over.
        late = [raw for raw in old if raw.strip() and not drop(raw)]
        if late:
            with path.open("ab") as new:
                new.writelines(late)
    return dropped


def _is_lines(path: Path) -> bool:
    return path.suffix in (".jsonl", ".ndjson")


def erase(roots: Iterable[Path], delivery_ids: set[str], needles: Sequence[str]) -> dict[str, int]:
    """Remove outbox files and lines of these deliveries or holding these values."""
    files = lines = 0
    for path in outbox_files(roots):
        if _is_lines(path):
            lines += _rewrite(
                path, lambda raw: _line_id(raw) in delivery_ids or contains(raw, needles), False
            )
            continue
        hit = path.stem in delivery_ids
        if not hit:
            with contextlib.suppress(OSError):
                hit = contains(path.read_bytes(), needles)
        if hit:
            path.unlink(missing_ok=True)
            files += 1
    return {"files": files, "lines": lines}


def expire(roots: Iterable[Path], before: float, limit: int, dry_run: bool) -> int:
    """Outbox files older than ``before`` (mtime) and lines whose ``at`` is; at most
    ``limit`` files per call (lines of one file go together)."""
    count = files = 0
    for path in outbox_files(roots):
        if files >= limit:
            break
        if _is_lines(path):
            count += _rewrite(path, lambda raw: (_line_time(raw) or before) < before, dry_run)
            continue
        try:
            old = path.stat().st_mtime < before
        except OSError:
            continue
        if old:
            files += 1
            count += 1
            if not dry_run:
                path.unlink(missing_ok=True)
    return count
