"""Human durations in conf files: ``"250ms"``, ``"30s"``, ``"5m"``, ``"7d"``, ``"1h30m"``."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, tzinfo

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


class Duration(float):
    """Seconds, written in conf as a number or as a string like ``"1h30m"``.

    ``days`` keeps the whole days it was written with (``d``, ``w``): a scenario moves a
    date by those on the calendar (``shift``), not by 24-hour blocks.
    """

    days: int = 0

    @classmethod
    def parse(cls, value: object) -> Duration:
        if isinstance(value, bool):
            raise ValueError("a duration is a number of seconds or a string like '30s'")
        if isinstance(value, int | float):
            if value < 0:
                raise ValueError("a duration cannot be negative")
            return cls(value)
        if not isinstance(value, str):
            raise ValueError("a duration is a number of seconds or a string like '30s'")
        text = value.strip().replace(" ", "")
        pos, total, days = 0, 0.0, 0.0
        for match in _PART.finditer(text):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _UNITS[match.group(2)]
            if match.group(2) in ("d", "w"):
                days += float(match.group(1)) * (7 if match.group(2) == "w" else 1)
            pos = match.end()
        if pos != len(text) or not text:
            raise ValueError(f"{value!r} is not a duration (try '30s', '5m', '2h', '7d', '1h30m')")
        duration = cls(total)
        duration.days = int(days)
        return duration

    @property
    def clock(self) -> float:
        """The seconds beyond its whole days (``2h`` of ``3d2h``)."""
        return float(self) - self.days * 86400.0

    def __repr__(self) -> str:
        return f"Duration({float(self)!r})"


def shift(moment: float, days: int, seconds: float, zone: tzinfo) -> float:
    """``moment`` (epoch seconds) moved by ``days`` calendar days in ``zone``, to the same
    wall-clock time, then by ``seconds`` exactly.

    Across a daylight-saving change a day is 23 or 25 hours: "3 days before midnight"
    is midnight, not 23:00 or 01:00. A wall-clock time that does not exist that day (in
    the hour skipped in spring) falls one hour later.
    """
    if days:
        local = datetime.fromtimestamp(moment, zone)
        moved = datetime.combine(local.date() + timedelta(days=days), local.time(), zone)
        moment = moved.timestamp()
    return moment + seconds
