"""Six-field NCRONTAB expressions, as Azure Functions timer triggers use them.

``{second} {minute} {hour} {day} {month} {day-of-week}``; each field takes ``*``, numbers, ranges
``a-b``, lists ``a,b`` and steps ``*/n`` or ``a-b/n``; months and weekdays also by English
abbreviation (``Jan``, ``Mon``). Day and weekday combine as in cron: when both are restricted, a
time matches if either does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_FIELDS = (
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 6),
)
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


@dataclass(frozen=True)
class Schedule:
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    def _day_matches(self, t: datetime) -> bool:
        weekday = (t.weekday() + 1) % 7
        if self.any_day or self.any_weekday:
            return t.day in self.days and weekday in self.weekdays
        return t.day in self.days or weekday in self.weekdays

    def next_after(self, after: datetime) -> datetime:
        """The first matching time strictly after ``after`` (keeps its tzinfo)."""
        t = after.replace(microsecond=0) + timedelta(seconds=1)
        limit = after + timedelta(days=366 * 5)
        while t <= limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0, second=0) + timedelta(days=32)).replace(
                    day=1
                )
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
            elif t.minute not in self.minutes:
                t = t.replace(second=0) + timedelta(minutes=1)
            elif t.second not in self.seconds:
                t += timedelta(seconds=1)
            else:
                return t
        raise ValueError("schedule never fires")


def _number(token: str, index: int) -> int:
    name, low, high = _FIELDS[index]
    names = _MONTHS if index == 4 else _WEEKDAYS if index == 5 else None
    lowered = token.lower()[:3]
    if names and lowered in names:
        return names.index(lowered) + (1 if index == 4 else 0)
    if not token.isdigit():
        raise ValueError(f"{name} field: {token!r} is not a number")
    number = int(token)
    if index == 5 and number == 7:  # cron's alternative Sunday
        number = 0
    if not low <= number <= high:
        raise ValueError(f"{name} field: {number} is outside {low}-{high}")
    return number


def _field(text: str, index: int) -> frozenset[int]:
    name, low, high = _FIELDS[index]
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{name} field: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, b = base.split("-", 1)
            first, last = _number(a, index), _number(b, index)
            if first > last:
                raise ValueError(f"{name} field: range {base!r} runs backwards")
        else:
            first = _number(base, index)
            last = high if step_text else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


def parse(expression: str) -> Schedule:
    """Parse a six-field NCRONTAB expression; ``ValueError`` says what is wrong."""
    parts = expression.split()
    if len(parts) != 6:
        raise ValueError(
            "must be a six-field NCRONTAB expression '{second} {minute} {hour} {day} {month} "
            "{day-of-week}', e.g. '0 0 */6 * * *'"
        )
    seconds, minutes, hours, days, months, weekdays = (_field(p, i) for i, p in enumerate(parts))
    return Schedule(
        seconds,
        minutes,
        hours,
        days,
        months,
        weekdays,
        any_day=parts[3] == "*",
        any_weekday=parts[5] == "*",
    )
