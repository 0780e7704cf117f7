"""Time, one way for the whole service: the current instant, ISO 8601 text in UTC, parsing the
timestamps Graph, Table Storage and the platform send, and the sync window."""

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
