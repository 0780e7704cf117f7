"""The one retry policy for Graph and Entra: Retry-After first, else backoff with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRY_STATUSES = frozenset({429, 503, 504})


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²", which isdigit() accepts and float() refuses
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying one request before handing it back to the queue.

    ``budget`` bounds the total waiting; a wait that would exceed it is not taken, and the error
    (with Graph's Retry-After) goes to the caller, whose queue message retries later instead of
    holding a worker.
    """

    attempts: int = 5
    base: float = 0.5
    cap: float = 20.0
    budget: float = 45.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full-jitter exponential backoff for the given 1-based retry number."""
        ceiling = min(self.cap, self.base * (2 ** (attempt - 1)))
        return (rng or random).uniform(ceiling / 2, ceiling)

    def wait_before(
        self,
        attempt: int,
        retry_after: float | None,
        waited: float,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait before retry ``attempt``; None when the policy says stop."""
        if attempt >= self.attempts:
            return None
        delay = retry_after if retry_after is not None else self.backoff(attempt, rng)
        if waited + delay > self.budget:
            return None
        return delay
