"""Recurrence patterns of Outlook series: validation and expansion into occurrence dates."""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
INDEXES = {"first": 0, "second": 1, "third": 2, "fourth": 3, "last": -1}
PATTERNS = (
    "daily",
    "weekly",
    "absoluteMonthly",
    "relativeMonthly",
    "absoluteYearly",
    "relativeYearly",
)
RANGES = ("endDate", "noEnd", "numbered")
MAX_OCCURRENCES = 10_000
NO_DATE = "0001-01-01"


class RecurrenceError(ValueError):
    pass


def _enum(value: Any, allowed: tuple[str, ...] | list[str], what: str) -> str:
    text = str(value or "")
    for option in allowed:
        if option.lower() == text.lower():
            return option
    raise RecurrenceError(f"Requested value '{text}' was not found for {what}.")


def normalize(value: Any, start: date, time_zone: str) -> dict[str, Any]:
    """Validate a recurrence from a request; return it in the shape Graph reads it back."""
    if not isinstance(value, dict):
        raise RecurrenceError("recurrence must be an object with pattern and range.")
    pattern_in = value.get("pattern")
    range_in = value.get("range")
    if not isinstance(pattern_in, dict) or not isinstance(range_in, dict):
        raise RecurrenceError("recurrence needs both a pattern and a range.")
    kind = _enum(pattern_in.get("type"), PATTERNS, "RecurrencePatternType")
    interval = int(pattern_in.get("interval") or 1)
    if interval < 1:
        raise RecurrenceError("The recurrence pattern interval must be at least 1.")
    days = [_enum(d, DAYS, "DayOfWeek") for d in pattern_in.get("daysOfWeek") or []]
    if kind in ("weekly", "relativeMonthly", "relativeYearly") and not days:
        raise RecurrenceError(f"A {kind} recurrence pattern needs daysOfWeek.")
    day_of_month = int(pattern_in.get("dayOfMonth") or 0)
    if kind in ("absoluteMonthly", "absoluteYearly") and not 1 <= day_of_month <= 31:
        raise RecurrenceError(f"A {kind} recurrence pattern needs dayOfMonth between 1 and 31.")
    month = int(pattern_in.get("month") or 0)
    if kind in ("absoluteYearly", "relativeYearly") and not 1 <= month <= 12:
        raise RecurrenceError(f"A {kind} recurrence pattern needs month between 1 and 12.")
    first_day = _enum(pattern_in.get("firstDayOfWeek") or "sunday", DAYS, "DayOfWeek")
    index = _enum(pattern_in.get("index") or "first", tuple(INDEXES), "WeekIndex")

    range_kind = _enum(range_in.get("type"), RANGES, "RecurrenceRangeType")
    try:
        range_start = date.fromisoformat(str(range_in.get("startDate") or start.isoformat())[:10])
    except ValueError as error:
        raise RecurrenceError("range.startDate is not a date.") from error
    end_text = NO_DATE
    occurrences = 0
    if range_kind == "endDate":
        try:
            end_date = date.fromisoformat(str(range_in.get("endDate") or "")[:10])
        except ValueError as error:
            raise RecurrenceError("An endDate recurrence range needs range.endDate.") from error
        if end_date < range_start:
            raise RecurrenceError("range.endDate is before range.startDate.")
        end_text = end_date.isoformat()
    elif range_kind == "numbered":
        occurrences = int(range_in.get("numberOfOccurrences") or 0)
        if occurrences < 1:
            raise RecurrenceError("A numbered recurrence range needs numberOfOccurrences >= 1.")
    return {
        "pattern": {
            "type": kind,
            "interval": interval,
            "month": month,
            "dayOfMonth": day_of_month,
            "daysOfWeek": days,
            "firstDayOfWeek": first_day,
            "index": index,
        },
        "range": {
            "type": range_kind,
            "startDate": range_start.isoformat(),
            "endDate": end_text,
            "recurrenceTimeZone": str(range_in.get("recurrenceTimeZone") or time_zone),
            "numberOfOccurrences": occurrences,
        },
    }


def _add_months(year: int, month: int, count: int) -> tuple[int, int]:
    total = year * 12 + (month - 1) + count
    return total // 12, total % 12 + 1


def _clamped(year: int, month: int, day: int) -> date:
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


def _relative(year: int, month: int, days: list[str], index: str) -> date | None:
    wanted = {DAYS.index(d) for d in days}
    matches = [
        date(year, month, d)
        for d in range(1, calendar.monthrange(year, month)[1] + 1)
        if date(year, month, d).weekday() in wanted
    ]
    position = INDEXES[index]
    if position == -1:
        return matches[-1] if matches else None
    return matches[position] if position < len(matches) else None


def _candidates(rec: dict[str, Any]) -> Iterator[date]:
    """Dates the pattern produces from range.startDate on, unbounded."""
    pattern = rec["pattern"]
    start = date.fromisoformat(rec["range"]["startDate"])
    kind = pattern["type"]
    interval = int(pattern["interval"])
    if kind == "daily":
        current = start
        while True:
            yield current
            current += timedelta(days=interval)
    elif kind == "weekly":
        first = DAYS.index(pattern["firstDayOfWeek"])
        offsets = sorted((DAYS.index(d) - first) % 7 for d in pattern["daysOfWeek"])
        week = start - timedelta(days=(start.weekday() - first) % 7)
        while True:
            for offset in offsets:
                candidate = week + timedelta(days=offset)
                if candidate >= start:
                    yield candidate
            week += timedelta(weeks=interval)
    elif kind in ("absoluteMonthly", "relativeMonthly"):
        step = 0
        while True:
            year, month = _add_months(start.year, start.month, step)
            found: date | None = (
                _clamped(year, month, int(pattern["dayOfMonth"]))
                if kind == "absoluteMonthly"
                else _relative(year, month, pattern["daysOfWeek"], pattern["index"])
            )
            if found is not None and found >= start:
                yield found
            step += interval
    else:  # yearly
        year = start.year
        while True:
            month = int(pattern["month"])
            chosen: date | None = (
                _clamped(year, month, int(pattern["dayOfMonth"]))
                if kind == "absoluteYearly"
                else _relative(year, month, pattern["daysOfWeek"], pattern["index"])
            )
            if chosen is not None and chosen >= start:
                yield chosen
            year += interval


def occurrence_dates(rec: dict[str, Any], until: date) -> Iterator[date]:
    """Occurrence dates of the series in order, up to `until` (inclusive) and the range's end."""
    range_ = rec["range"]
    end = date.fromisoformat(range_["endDate"]) if range_["type"] == "endDate" else None
    remaining = int(range_["numberOfOccurrences"]) if range_["type"] == "numbered" else None
    for count, candidate in enumerate(_candidates(rec)):
        if count >= MAX_OCCURRENCES or candidate > until:
            return
        if end is not None and candidate > end:
            return
        if remaining is not None:
            if remaining <= 0:
                return
            remaining -= 1
        yield candidate
