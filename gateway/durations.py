"""Human durations in conf files: ``"250ms"``, ``"30s"``, ``"5m"``, ``"7d"``, ``"1h30m"``."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


class Duration(float):
    """Seconds, written in conf as a number or as a string like ``"1h30m"``."""

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
        pos, total = 0, 0.0
        for match in _PART.finditer(text):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(text) or not text:
            raise ValueError(f"{value!r} is not a duration (try '30s', '5m', '2h', '7d', '1h30m')")
        return cls(total)

    def __repr__(self) -> str:
        return f"Duration({float(self)!r})"
