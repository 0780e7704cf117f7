"""Events out to the booking platform (SPEC §3.3): signed, sequenced, retried, parked when hopeless.

``emit`` numbers an event for its resource and queues it; the ``deliver`` queue function posts it.
A delivery keeps its webhook id across retries, so the platform can drop repeats, and every
``data`` carries ``sequence`` so the platform can drop stale ones.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests

from sync_core import webhooks
from sync_core.clock import iso, now
from sync_core.config import Settings
from sync_core.identity import pooled_session
from sync_core.store.history import History, HistoryEntry
from sync_core.store.queues import DELIVER, QueueStore, poison_queue
from sync_core.store.records import SequenceClock

log = logging.getLogger(__name__)

TIMEOUT = (5.0, 10.0)
AT_ONCE_TIMEOUT = (2.0, 3.0)  # a first try made inside another function: retries wait longer
TEST_TIMEOUT = (5.0, 10.0)  # a test event: an admin waits for the answer
TEST_EVENT = "platform.test"


def stamp() -> str:
    """The ``occurred_at`` of an outgoing event: now, in milliseconds."""
    return iso(now(), "milliseconds")


def retry_delay(base: float, attempt: int, cap: float = 3600.0) -> int:
    """Seconds before retry ``attempt`` + 1: base, 3 base, 9 base, ... up to an hour."""
    return int(min(cap, base * 3 ** (attempt - 1)))


@dataclass(frozen=True)
class PlatformTestResult:
    """How a ``platform.test`` event went: ``delivered`` when the platform answered 2xx."""

    delivered: bool
    status: int | None  # the platform's HTTP status; None when it gave no answer
    latency_ms: int
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "delivered": self.delivered,
            "status": self.status,
            "latency_ms": self.latency_ms,
        }
        if self.error is not None:
            document["error"] = self.error
        return document


class Platform:
    def __init__(
        self,
        settings: Settings,
        queues: QueueStore,
        sequences: SequenceClock,
        history: History,
        session: requests.Session | None = None,
        clock: Callable[[], str] = stamp,
    ) -> None:
        self.settings = settings
        self.queues = queues
        self.sequences = sequences
        self.history = history
        self.session = session or pooled_session()
        self.clock = clock

    def emit(
        self,
        event_type: str,
        resource_id: str,
        data: dict[str, Any],
        *,
        at_once: bool = False,
        after: int = 0,
    ) -> int:
        """Queue one event for the platform; returns its ``sequence``, larger than ``after`` (the
        last one sent for the same object). ``at_once`` makes the first try right here (saving
        the queue's round trips); only retries are queued then."""
        message_id = webhooks.new_message_id()
        sequence = self.sequences.next(after)
        body = {
            "type": event_type,
            "timestamp": self.clock(),
            "data": {
                **data,
                "resource_id": resource_id,
                "sequence": sequence,
            },
        }
        message = {"id": message_id, "body": body, "attempt": 1}
        if at_once:
            self.deliver(message, timeout=AT_ONCE_TIMEOUT)
        else:
            self.queues.send(DELIVER, message)
        return sequence

    def send_test(self) -> PlatformTestResult:
        """Post one signed ``platform.test`` event now and say how it went: not queued, not
        retried; recorded in history. Its ``data`` carries a ``sequence`` like every event."""
        message_id = webhooks.new_message_id()
        body = {
            "type": TEST_EVENT,
            "timestamp": self.clock(),
            "data": {
                "message": "A test event from calendar sync; no action needed.",
                "sequence": self.sequences.next(0),
            },
        }
        status: int | None = None
        error: str | None = None
        started = time.monotonic()
        try:
            status = self._post(message_id, body, TEST_TIMEOUT).status_code
            if not 200 <= status < 300:
                error = f"the platform answered {status}"
        except requests.Timeout as exc:
            error = f"the platform did not answer in time ({type(exc).__name__})"
        except requests.RequestException as exc:
            error = f"the platform could not be reached ({type(exc).__name__})"
        latency = round((time.monotonic() - started) * 1000)
        result = PlatformTestResult(error is None, status, latency, error)
        self.history.record(
            HistoryEntry(
                at=datetime.now(UTC),
                resource_id=None,
                action=f"deliver.{TEST_EVENT}",
                subject=message_id,
                outcome="ok" if result.delivered else "failed",
                detail=f"{error or f'the platform answered {status}'}; {latency} ms",
            )
        )
        return result

    def _post(
        self, message_id: str, body: dict[str, Any], timeout: tuple[float, float]
    ) -> requests.Response:
        """One signed POST of ``body`` to the platform."""
        raw = _json_bytes(body)
        headers = webhooks.sign(
            self.settings.platform_webhook_secret,
            message_id,
            int(datetime.now(UTC).timestamp()),
            raw,
        )
        headers["Content-Type"] = "application/json"
        return self.session.post(
            self.settings.platform_webhook_url, data=raw, headers=headers, timeout=timeout
        )

    def deliver(self, message: dict[str, Any], timeout: tuple[float, float] = TIMEOUT) -> bool:
        """Post one event. False when it failed and was requeued or parked."""
        message_id, body, attempt = message["id"], message["body"], int(message.get("attempt", 1))
        try:
            answer = self._post(message_id, body, timeout)
            if 200 <= answer.status_code < 300:
                return True
            problem = f"the platform answered {answer.status_code}"
        except requests.RequestException as exc:
            problem = f"the platform could not be reached ({type(exc).__name__})"

        resource_id = body["data"].get("resource_id")
        if attempt >= self.settings.retry_attempts:
            # Parked: kept in the poison queue, where status counts it and an admin can replay it.
            self.queues.send(poison_queue(DELIVER), {**message, "error": problem})
            log.warning(
                "delivery %s (%s) parked after %d tries: %s",
                message_id,
                body["type"],
                attempt,
                problem,
            )
            self.history.record(
                HistoryEntry(
                    at=datetime.now(UTC),
                    resource_id=resource_id,
                    action=f"deliver.{body['type']}",
                    subject=message_id,
                    outcome="parked",
                    detail=f"{problem}; gave up after {attempt} tries",
                )
            )
            return False
        delay = retry_delay(self.settings.retry_base_seconds, attempt)
        self.queues.send(DELIVER, {**message, "attempt": attempt + 1}, delay_seconds=delay)
        log.info("delivery %s: %s; try %d in %d s", message_id, problem, attempt + 1, delay)
        return False


def _json_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
