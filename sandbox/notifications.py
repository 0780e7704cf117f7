"""Change and lifecycle notifications: the validation handshake and asynchronous delivery.

Shapes follow GD concepts/outlook-change-notifications-overview.md (change notifications without
resource data) and concepts/change-notifications-lifecycle-events.md (lifecycle notifications).

Delivery: a worker collects notifications for `notification_delay_seconds`, then POSTs them per
notification URL as one `{"value": [...]}` batch (notifications of several subscriptions may share
a POST). A non-2xx answer or no answer within `delivery_timeout_seconds` is retried after each of
`delivery_retry_delays`, then dropped. Every attempt is recorded.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from sandbox import timeutil
from sandbox.defaults import Settings
from sandbox.messages import GraphError

MAX_PER_POST = 100
MAX_RECORDS = 20_000


def validation_token() -> str:
    """Graph's validation tokens contain spaces, colons and other symbols."""
    return (
        "Validation: Testing client application reachability for subscription "
        f"Request-Id: {uuid.uuid4()} & more=symbols+/?#%"
    )


def _append_query(url: str, name: str, value: str) -> str:
    separator = "&" if urlsplit(url).query else "?"
    return f"{url}{separator}{name}={quote(value, safe='')}"


@dataclass(order=True)
class _Pending:
    due: float
    order: int
    url: str = field(compare=False)
    kind: str = field(compare=False)
    items: list[dict[str, Any]] = field(compare=False)
    attempt: int = field(compare=False, default=1)


class Notifier:
    def __init__(self, settings: Settings, ca_bundle: str | None = None) -> None:
        self.settings = settings
        self.verify: str | bool = ca_bundle or True
        self._lock = threading.Condition()
        self._heap: list[_Pending] = []
        self._order = itertools.count()
        self._records: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDS)
        self._record_seq = itertools.count(1)
        self._stopping = False
        self._in_flight = 0
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sandbox-notify")
        self._thread = threading.Thread(target=self._run, name="sandbox-notifier", daemon=True)
        self._thread.start()
        self.on_record: Callable[[dict[str, Any]], None] | None = None
        # Proxies from the environment must not capture loopback deliveries.
        self._session = requests.Session()
        self._session.trust_env = False

    # -- handshake -----------------------------------------------------------------------

    def validate(self, url: str) -> None:
        """POST the validation request; raise a 400 GraphError unless the echo is exact."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise GraphError(400, "InvalidRequest", f"The notification URL '{url}' is invalid.")
        if parts.scheme != "https" and self.settings.require_https_notifications:
            raise GraphError(
                400,
                "InvalidRequest",
                "Subscription validation request failed. The notification URL must use https.",
            )
        token = validation_token()
        target = _append_query(url, "validationToken", token)
        started = time.monotonic()
        record: dict[str, Any] = {"kind": "validation", "url": url, "attempt": 1, "items": []}
        try:
            answer = self._session.post(
                target,
                data=b"",
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=self.settings.validation_timeout_seconds,
                verify=self.verify,
            )
        except requests.Timeout as error:
            self._record(record, None, started, "timeout")
            raise GraphError(
                400, "InvalidRequest", "Subscription validation request timed out."
            ) from error
        except requests.RequestException as error:
            self._record(record, None, started, f"{type(error).__name__}: {error}")
            raise GraphError(
                400,
                "InvalidRequest",
                "Subscription validation request failed. Notification endpoint must respond "
                "with 200 OK to validation request.",
            ) from error
        self._record(record, answer.status_code, started, None)
        if answer.status_code != 200:
            raise GraphError(
                400,
                "InvalidRequest",
                "Subscription validation request failed. Notification endpoint must respond "
                "with 200 OK to validation request.",
            )
        content_type = answer.headers.get("Content-Type", "")
        if not content_type.lower().startswith("text/plain") or answer.text != token:
            raise GraphError(
                400,
                "InvalidRequest",
                "Subscription validation request failed. Response must exactly match "
                "validationToken query parameter"
                + ("" if content_type.lower().startswith("text/plain") else " (as text/plain)")
                + ".",
            )

    # -- delivery --------------------------------------------------------------------------

    def enqueue(self, url: str, kind: str, item: dict[str, Any]) -> None:
        due = time.monotonic() + self.settings.notification_delay_seconds
        with self._lock:
            heapq.heappush(self._heap, _Pending(due, next(self._order), url, kind, [item]))
            self._lock.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and (
                    not self._heap or self._heap[0].due > time.monotonic()
                ):
                    timeout = self._heap[0].due - time.monotonic() if self._heap else None
                    self._lock.wait(timeout)
                if self._stopping:
                    return
                first = heapq.heappop(self._heap)
                batch = first
                # Everything else queued for the same URL joins this POST (a first attempt
                # collects what arrived during its delay; retries go out as they were).
                if batch.attempt == 1:
                    keep: list[_Pending] = []
                    for other in self._heap:
                        if (
                            other.url == batch.url
                            and other.kind == batch.kind
                            and other.attempt == 1
                            and len(batch.items) + len(other.items) <= MAX_PER_POST
                        ):
                            batch.items.extend(other.items)
                        else:
                            keep.append(other)
                    if len(keep) != len(self._heap):
                        self._heap = keep
                        heapq.heapify(self._heap)
                self._in_flight += 1
            self._pool.submit(self._deliver, batch)

    def _deliver(self, batch: _Pending) -> None:
        started = time.monotonic()
        record: dict[str, Any] = {
            "kind": batch.kind,
            "url": batch.url,
            "attempt": batch.attempt,
            "items": batch.items,
        }
        status: int | None = None
        error: str | None = None
        try:
            answer = self._session.post(
                batch.url,
                json={"value": batch.items},
                timeout=self.settings.delivery_timeout_seconds,
                verify=self.verify,
            )
            status = answer.status_code
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}: {exc}"
        try:
            ok = status is not None and 200 <= status < 300
            delays = self.settings.delivery_retry_delays
            if not ok and batch.attempt <= len(delays):
                retry = _Pending(
                    time.monotonic() + delays[batch.attempt - 1],
                    next(self._order),
                    batch.url,
                    batch.kind,
                    batch.items,
                    batch.attempt + 1,
                )
                record["retryScheduled"] = True
                with self._lock:
                    heapq.heappush(self._heap, retry)
                    self._lock.notify()
            elif not ok:
                record["dropped"] = True
            self._record(record, status, started, error)
        finally:
            with self._lock:
                self._in_flight -= 1
                self._lock.notify_all()

    def _record(
        self, record: dict[str, Any], status: int | None, started: float, error: str | None
    ) -> None:
        duration = time.monotonic() - started
        record.update(
            {
                "seq": next(self._record_seq),
                "time": timeutil.graph_stamp(timeutil.now()),
                "status": status,
                "error": error,
                "durationMs": round(duration * 1000, 1),
                "slow": duration > 2.9,
                "subscriptionIds": sorted({str(i.get("subscriptionId")) for i in record["items"]}),
            }
        )
        with self._lock:
            self._records.append(record)
        if self.on_record is not None:
            self.on_record(record)

    def records(self, since: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self._records if r["seq"] > since]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._heap.clear()

    def idle(self) -> bool:
        with self._lock:
            return not self._heap and self._in_flight == 0

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
