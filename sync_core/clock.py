"""Time, one way for the whole service: the current instant, ISO 8601 text in UTC, parsing the
timestamps Graph, Table Storage and the platform send, the sync window, and times as people
read them on the status page and in the CLI."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Literal, overload

Precision = Literal["auto", "seconds", "milliseconds", "microseconds"]


def now() -> datetime:
    return datetime.now(UTC)


@overload
def iso(moment: datetime, timespec: Precision = "seconds") -> str: ...
@overload
def iso(moment: None, timespec: Precision = "seconds") -> None: ...
def iso(moment: datetime | None, timespec: Precision = "seconds") -> str | None:
    """``2026-11-22T10:00:00Z``: UTC with a ``Z``, to the given precision ("auto" shows
    microseconds only when there are any)."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_iso(value: object) -> datetime | None:
    """An ISO 8601 timestamp as an aware datetime (UTC when it names no offset), or None.
    Takes Graph's seven fractional digits (``2026-11-22T10:00:00.1234567Z``): Python reads six."""
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    if "." in text:
        head, _, tail = text.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        text = f"{head}.{digits[:6]}{tail[len(digits) :]}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def sync_window(today: date, days: int) -> tuple[datetime, datetime]:
    """The sync window (SPEC §4): from the start of today (UTC) ``days`` ahead."""
    start = datetime.combine(today, datetime.min.time(), UTC)
    return start, start + timedelta(days=days)


def ago(value: object, now: datetime) -> str:
    """``2026-11-02 10:15 UTC (5 min ago)``, or ``never``; ``value`` a datetime or ISO text."""
    moment = value if isinstance(value, datetime) else parse_iso(value)
    if moment is None:
        return "never"
    seconds = int((now - moment).total_seconds())
    if seconds < 0:
        relative = "in " + _span(-seconds)
    elif seconds < 60:
        relative = "just now"
    else:
        relative = _span(seconds) + " ago"
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC ({relative})"


def _span(seconds: int) -> str:
    if seconds < 3600:
        return f"{max(seconds // 60, 1)} min"
    if seconds < 86400 * 2:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"
