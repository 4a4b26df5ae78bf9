"""Sending windows ("quiet hours"): when a message may reach a person.

French rules for commercial SMS (and good manners for reminders): Monday to Saturday,
08:00-20:00, never on public holidays. A delivery outside its window is deferred to the
window's next opening, never dropped. Windows are named in conf (``[windows.NAME]``); a
``courtesy`` window with the French defaults always exists.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
import msgspec

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")
#: The name of the built-in window, and of "no window" in a rule.
COURTESY = "courtesy"
NO_WINDOW = "none"


class WindowConf(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    days: list[str] = msgspec.field(default_factory=lambda: list(DAYS[:6]))
    #: ``HH:MM``, checked with the rest by ``window_problems`` so that one run lists
    #: every mistake of a window.
    start: str = "08:00"
    end: str = "20:00"
    timezone: str = "Europe/Paris"
    #: A country code (``FR``, optionally ``FR-57`` for a subdivision such as Moselle)
    #: whose public holidays are closed; empty: none.
    holidays: str = "FR"


def _hm(text: str) -> time | None:
    if text == "24:00":
        return None  # end of day
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


@lru_cache(maxsize=64)
def _holiday_calendar(code: str) -> holidays.HolidayBase:
    country, _, subdiv = code.partition("-")
    return holidays.country_holidays(country, subdiv=subdiv or None)


def window_problems(conf: WindowConf) -> list[tuple[str, str]]:
    """Every mistake in a window, as (field, reason)."""
    problems = []
    unknown = [d for d in conf.days if d not in DAYS]
    if unknown or not conf.days:
        problems.append(("days", f"use {', '.join(DAYS)} (got {conf.days})"))
    bad = [(f, v) for f, v in (("start", conf.start), ("end", conf.end)) if not _HHMM.match(v)]
    problems.extend((f, f"{v!r} is not a time of day: HH:MM, 00:00 to 24:00") for f, v in bad)
    if not bad:
        start, end = _hm(conf.start) or time(0), _hm(conf.end)
        if end is not None and end <= start:
            problems.append(("end", f"{conf.end} must come after start {conf.start}"))
    try:
        ZoneInfo(conf.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(("timezone", f"unknown time zone {conf.timezone!r}"))
    if conf.holidays:
        try:
            _holiday_calendar(conf.holidays)
        except (NotImplementedError, KeyError):
            problems.append(("holidays", f"no calendar for {conf.holidays!r}"))
    return problems


class SendingWindow:
    def __init__(self, name: str, conf: WindowConf) -> None:
        self.name = name
        problems = window_problems(conf)
        if problems:
            raise ValueError("; ".join(f"{field}: {reason}" for field, reason in problems))
        self.zone = ZoneInfo(conf.timezone)
        self.days = frozenset(DAYS.index(d) for d in conf.days)
        self.start = _hm(conf.start) or time(0)
        self.end = _hm(conf.end)
        self.calendar = _holiday_calendar(conf.holidays) if conf.holidays else None

    def _open_day(self, day: date) -> bool:
        if day.weekday() not in self.days:
            return False
        # Not `self.calendar and ...`: the calendar is an empty dict until first asked.
        return self.calendar is None or day not in self.calendar

    def next_open(self, moment: datetime) -> datetime | None:
        """``None`` if a message may go at ``moment``; else when the window next opens."""
        local = moment.astimezone(self.zone)
        day = local.date()
        clock = local.time().replace(tzinfo=None)
        if self._open_day(day) and clock >= self.start and (self.end is None or clock < self.end):
            return None
        if self._open_day(day) and clock < self.start:
            return datetime.combine(day, self.start, self.zone)
        for offset in range(1, 400):
            candidate = day + timedelta(days=offset)
            if self._open_day(candidate):
                return datetime.combine(candidate, self.start, self.zone)
        raise ValueError(f"window {self.name!r} never opens")


def build_windows(confs: dict[str, WindowConf]) -> tuple[dict[str, SendingWindow], list[str]]:
    """Every window by name (``courtesy`` included) and the problems found, as
    ``windows.NAME.field: reason``."""
    out: dict[str, SendingWindow] = {}
    problems = []
    merged = {COURTESY: WindowConf(), **confs}
    for name, conf in merged.items():
        if name == NO_WINDOW:
            problems.append(f"windows.{name}: {NO_WINDOW!r} is reserved (it means no window)")
            continue
        found = window_problems(conf)
        problems.extend(f"windows.{name}.{field}: {reason}" for field, reason in found)
        if not found:
            out[name] = SendingWindow(name, conf)
    return out, problems
