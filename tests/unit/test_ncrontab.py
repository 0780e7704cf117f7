from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sync_core import ncrontab


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 0 */6 * * *", "2026-11-22T05:59:59", "2026-11-22T06:00:00"),
        ("0 0 */6 * * *", "2026-11-22T06:00:00", "2026-11-22T12:00:00"),
        ("0 0 * * * *", "2026-11-22T23:30:00", "2026-11-23T00:00:00"),
        ("*/10 * * * * *", "2026-11-22T10:00:01", "2026-11-22T10:00:10"),
        ("0 30 3 * * *", "2026-12-31T04:00:00", "2027-01-01T03:30:00"),
        ("0 0 9 * * Mon-Fri", "2026-11-21T10:00:00", "2026-11-23T09:00:00"),  # Saturday → Monday
        ("0 0 0 1 Jan *", "2026-11-22T00:00:00", "2027-01-01T00:00:00"),
        ("0 15,45 * * * *", "2026-11-22T10:16:00", "2026-11-22T10:45:00"),
        ("0 0 12 29 2 *", "2026-03-01T00:00:00", "2028-02-29T12:00:00"),
    ],
)
def test_next_occurrence(expression: str, after: str, expected: str) -> None:
    assert ncrontab.parse(expression).next_after(at(after)) == at(expected)


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("* * * * *", "six-field"),
        ("60 * * * * *", "second field"),
        ("0 0 25 * * *", "hour field"),
        ("0 0 0 0 * *", "day field"),
        ("0 0 0 * 13 *", "month field"),
        ("0 0 0 * * 8", "day-of-week field"),
        ("*/0 * * * * *", "step"),
        ("0 0 5-1 * * *", "backwards"),
        ("x * * * * *", "not a number"),
    ],
)
def test_invalid_expressions_say_why(expression: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        ncrontab.parse(expression)
