"""What a mapping says about how one resource is kept in step with its mailbox (SPEC §4, §9):
which way, how much of a title the platform sees, and which Outlook events it leaves out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

Privacy = Literal["full", "busy_only"]
PRIVACY_LEVELS: tuple[Privacy, ...] = ("full", "busy_only")

# both: bookings to Outlook and Outlook events back as blockers; to_outlook: bookings only (no
# subscription, no blockers); from_outlook: blockers only (bookings are ignored, so read-only
# calendar access is enough).
Direction = Literal["both", "to_outlook", "from_outlook"]
DIRECTIONS: tuple[Direction, ...] = ("both", "to_outlook", "from_outlook")

MAX_PATTERN_LENGTH = 200


def writes_outlook(direction: str) -> bool:
    return direction != "from_outlook"


def reads_outlook(direction: str) -> bool:
    return direction != "to_outlook"


@dataclass(frozen=True)
class Filters:
    """Outlook events a mapping does not turn into blockers. All off by default."""

    ignore_all_day: bool = False
    # A regular expression searched in the event's subject, case-insensitively.
    ignore_title_pattern: str | None = None
    ignore_declined: bool = False  # the mailbox's own answer to the meeting is "declined"

    def to_json(self) -> dict[str, Any]:
        return {
            "ignore_all_day": self.ignore_all_day,
            "ignore_title_pattern": self.ignore_title_pattern,
            "ignore_declined": self.ignore_declined,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any] | None) -> Filters:
        value = value or {}
        return cls(
            ignore_all_day=bool(value.get("ignore_all_day", False)),
            ignore_title_pattern=value.get("ignore_title_pattern") or None,
            ignore_declined=bool(value.get("ignore_declined", False)),
        )

    def ignores(self, event: dict[str, Any] | Any) -> bool:
        """Whether this mapping leaves the Outlook event out (it blocks nothing for it)."""
        if self.ignore_all_day and event.get("isAllDay"):
            return True
        if self.ignore_declined:
            answer = (event.get("responseStatus") or {}).get("response")
            if str(answer or "").lower() == "declined":
                return True
        if self.ignore_title_pattern:
            return title_matches(self.ignore_title_pattern, str(event.get("subject") or ""))
        return False


def title_matches(pattern: str, title: str) -> bool:
    return re.search(pattern, title, re.IGNORECASE) is not None


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be a title filter, or None if it can."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"must be at most {MAX_PATTERN_LENGTH} characters"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"is not a valid regular expression: {exc}"
    return None
