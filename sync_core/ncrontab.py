"""Six-field NCRONTAB expressions, as Azure Functions timer triggers use them.

``{second} {minute} {hour} {day} {month} {day-of-week}``, with the rules of the NCrontab library
the Functions host evaluates them with:

* fields are separated by spaces; each is ``*``, a value, a range ``a-b`` (a reversed range
  ``b-a`` means the same), or a comma-separated list of those;
* a step ``/n`` may follow ``*``, a range, or a single value (``a/n`` runs from ``a`` to the
  field's maximum); a step below 1 counts as 1;
* second and minute take 0-59, hour 0-23, day 1-31, month 1-12, day-of-week 0-6 (Sunday = 0;
  7 is out of range);
* months and weekdays may also be named in English, by their full name or any leading part of it,
  in any case (``Jan``, ``january``, ``Ju`` = June, ``SEPT``, ``Mon``, ``sunday``); the first
  name in calendar order wins;
* a time matches when its day-of-month **and** its day-of-week both match (unlike Vixie cron,
  which matches either when both are restricted);
* a day beyond the end of a month never matches (``0 0 0 31 * *`` skips 30-day months).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime

_FIELDS = (
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 6),
)
_NAMES: dict[int, tuple[str, ...]] = {
    4: tuple(calendar.month_name[1:]),  # "January" .. "December"
    5: ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"),
}
# .NET Int32.Parse with NumberStyles.Integer: white space around, an optional sign, ASCII digits.
_INTEGER = re.compile(r"[\t\n\v\f\r ]*[+-]?[0-9]+[\t\n\v\f\r ]*", re.ASCII)
_INT32_MAX = 2**31 - 1
_MAX_YEAR = 9999


@dataclass(frozen=True)
class Field:
    """The values one field allows, ascending."""

    values: tuple[int, ...]

    def first(self) -> int:
        return self.values[0]

    def next(self, start: int) -> int | None:
        """The smallest allowed value ``>= start``; None if there is none."""
        for value in self.values:
            if value >= start:
                return value
        return None

    def __contains__(self, value: object) -> bool:
        return value in self.values


@dataclass(frozen=True)
class Schedule:
    seconds: Field
    minutes: Field
    hours: Field
    days: Field
    months: Field
    weekdays: Field  # 0 = Sunday

    def next_after(self, after: datetime, end: datetime | None = None) -> datetime:
        """The first matching time strictly after ``after`` (keeps its tzinfo).

        With ``end``, the search stops there: ``end`` itself is returned when nothing matches
        before it. Without it, ``ValueError`` says the schedule never fires again (before the
        year 10000, e.g. ``0 0 0 31 Feb *``).
        """
        while True:
            found = self._next(after, end)
            if found is None or (end is not None and found >= end):
                if end is not None:
                    return end
                raise ValueError("schedule never fires")
            if (found.isoweekday() % 7) in self.weekdays:
                return found
            # Right day of month, wrong day of week: go on from the last second of that day.
            after = found.replace(hour=23, minute=59, second=59, microsecond=0)

    def _next(self, base: datetime, end: datetime | None) -> datetime | None:
        """The next time after ``base`` matching all fields but the day of week; None: none
        before ``end`` or the year 10000. Follows NCrontab's CrontabSchedule step by step."""
        year, month, day = base.year, base.month, base.day
        hour, minute, second = base.hour, base.minute, base.second + 1
        s, mi, h, d, mo = self.seconds, self.minutes, self.hours, self.days, self.months

        found = s.next(second)
        if found is None:
            second = s.first()
            minute += 1
        else:
            second = found

        found = mi.next(minute)
        if found is None:
            second, minute = s.first(), mi.first()
            hour += 1
        else:
            if found > base.minute:
                second = s.first()
            minute = found

        found = h.next(hour)
        if found is None:
            minute, hour = mi.first(), h.first()
            day += 1
        else:
            if found > base.hour:
                second, minute = s.first(), mi.first()
            hour = found

        next_day = d.next(day)
        while True:
            if next_day is None:
                second, minute, hour, day = s.first(), mi.first(), h.first(), d.first()
                month += 1
            else:
                if next_day > base.day:
                    second, minute, hour = s.first(), mi.first(), h.first()
                day = next_day

            found = mo.next(month)
            if found is None:
                second, minute, hour, day = s.first(), mi.first(), h.first(), d.first()
                month = mo.first()
                year += 1
            else:
                if found > base.month:
                    second, minute, hour, day = s.first(), mi.first(), h.first(), d.first()
                month = found

            if year > _MAX_YEAR:
                return None
            changed = (year, month, day) != (base.year, base.month, base.day)
            if day > 28 and changed and day > calendar.monthrange(year, month)[1]:
                # Each part on its own, as NCrontab compares them.
                if end is not None and year >= end.year and month >= end.month and day >= end.day:
                    return None
                next_day = None
                continue
            return base.replace(
                year=year,
                month=month,
                day=day,
                hour=hour,
                minute=minute,
                second=second,
                microsecond=0,
            )


def _int32(text: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"{text!r} is not a number")
    number = int(text)
    if not -(2**31) <= number <= _INT32_MAX:
        raise ValueError(f"{text!r} is too large")
    return number


def _value(text: str, index: int) -> int:
    name, low, high = _FIELDS[index]
    if not text:
        raise ValueError(f"{name} field: a value cannot be empty")
    if "0" <= text[0] <= "9":
        return _int32(text)
    names = _NAMES.get(index)
    if names is None:
        raise ValueError(f"{name} field: {text!r} is not a number between {low} and {high}")
    lowered = text.lower()
    for position, full in enumerate(names):
        if full.lower().startswith(lowered):
            return position + low
    raise ValueError(f"{name} field: {text!r} is not one of {', '.join(names)}")


def _accumulate(values: set[int], start: int, end: int, step: int, index: int) -> None:
    name, low, high = _FIELDS[index]

    def outside(value: int) -> ValueError:
        return ValueError(f"{name} field: {value} is outside {low}-{high}")

    if start == end:
        if start < 0:  # "*"
            start, end = low, high
        elif not low <= start <= high:
            raise outside(start)
    else:
        if start > end:
            start, end = end, start
        if start < 0:
            start = low
        elif start < low:
            raise outside(start)
        if end < 0:
            end = high
        elif end > high:
            raise outside(end)
    values.update(range(start, end + 1, max(step, 1)))


def _element(text: str, index: int, values: set[int]) -> None:
    name = _FIELDS[index][0]
    high = _FIELDS[index][2]
    if not text:
        raise ValueError(f"{name} field: a value cannot be empty")
    step: int | None = None
    slash = text.find("/")
    if slash > 0:
        try:
            step = _int32(text[slash + 1 :])
        except ValueError as exc:
            raise ValueError(f"{name} field: step {exc}") from None
        text = text[:slash]
    if text == "*":
        _accumulate(values, -1, -1, 1 if step is None else step, index)
        return
    dash = text.find("-")
    if dash > 0:
        first, last = _value(text[:dash], index), _value(text[dash + 1 :], index)
        _accumulate(values, first, last, 1 if step is None else step, index)
        return
    value = _value(text, index)
    if step is None:
        _accumulate(values, value, value, 1, index)
    else:
        _accumulate(values, value, high, step, index)


def _field(text: str, index: int) -> Field:
    values: set[int] = set()
    elements = text.split(",") if text.find(",") > 0 else [text]
    for element in elements:
        try:
            _element(element, index, values)
        except ValueError as exc:
            message = str(exc)
            if not message.startswith(_FIELDS[index][0]):
                message = f"{_FIELDS[index][0]} field: {message}"
            raise ValueError(message) from None
    return Field(tuple(sorted(values)))


def parse(expression: str) -> Schedule:
    """Parse a six-field NCRONTAB expression; ``ValueError`` says what is wrong."""
    parts = [part for part in expression.split(" ") if part]
    if len(parts) != 6:
        raise ValueError(
            "must be a six-field NCRONTAB expression '{second} {minute} {hour} {day} {month} "
            "{day-of-week}', e.g. '0 0 */6 * * *'"
        )
    seconds, minutes, hours, days, months, weekdays = (_field(p, i) for i, p in enumerate(parts))
    return Schedule(seconds, minutes, hours, days, months, weekdays)
