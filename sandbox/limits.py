"""Outlook's per-app, per-mailbox throttling, and injected faults.

Throttling (GD includes/throttling-outlook.md): at most `concurrency_limit` requests in flight per
app and mailbox (the next gets 429 ApplicationThrottled "MailboxConcurrency"), and at most
`request_budget` requests per `budget_window_seconds` (then 429 until the window rolls over).
Both answers carry Retry-After.

Faults are rules the control API adds: match by method, path regex and optional mailbox; act on
the next `count` matches or with a `probability`; answer a status (429 with Retry-After, 503,
504, ...), delay then continue, delay then drop the connection (timeout), or reset it.
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sandbox.defaults import Settings
from sandbox.messages import ConnectionFault, GraphError

ACTIONS = ("status", "delay", "timeout", "reset")

DEFAULT_FAULT_BODIES: dict[int, tuple[str, str]] = {
    429: ("TooManyRequests", "Please retry again later."),
    500: ("generalException", "An unspecified error has occurred."),
    502: ("BadGateway", "The service is temporarily unavailable."),
    503: (
        "serviceNotAvailable",
        "The service is temporarily unavailable. Please retry after a delay.",
    ),
    504: ("UnknownError", "The gateway did not receive a timely response."),
}


class Throttled(GraphError):
    """429 from the mailbox's throttling (not an injected fault)."""


@dataclass
class _Window:
    started: float
    count: int = 0
    in_flight: int = 0


class Throttle:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], _Window] = {}

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()

    @contextmanager
    def slot(self, app_id: str, mailbox_key: str) -> Iterator[None]:
        """Hold one of the mailbox's concurrent slots; raise a 429 GraphError if none is free."""
        key = (app_id, mailbox_key.lower())
        settings = self.settings
        with self._lock:
            now = time.monotonic()
            window = self._windows.get(key)
            if window is None or now - window.started >= settings.budget_window_seconds:
                in_flight = window.in_flight if window else 0
                window = _Window(started=now, in_flight=in_flight)
                self._windows[key] = window
            window.count += 1
            if window.count > settings.request_budget:
                retry = max(1, math.ceil(settings.budget_window_seconds - (now - window.started)))
                raise Throttled(
                    429,
                    "ApplicationThrottled",
                    "Application is over its MailboxRequests limit.",
                    {"Retry-After": str(retry)},
                )
            if window.in_flight >= settings.concurrency_limit:
                raise Throttled(
                    429,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                    {"Retry-After": str(settings.concurrency_retry_after)},
                )
            window.in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                window.in_flight -= 1


@dataclass
class Fault:
    id: str
    method: str
    path: re.Pattern[str]
    mailbox: str | None
    action: str
    status: int
    retry_after: str | None
    delay: float
    remaining: int | None
    probability: float | None
    code: str | None
    message: str | None
    hits: int = 0
    created: float = field(default_factory=time.time)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "method": self.method,
            "path": self.path.pattern,
            "mailbox": self.mailbox,
            "action": self.action,
            "status": self.status,
            "retryAfter": self.retry_after,
            "delay": self.delay,
            "remaining": self.remaining,
            "probability": self.probability,
            "code": self.code,
            "message": self.message,
            "hits": self.hits,
        }


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = []
        self._random = random.Random()  # noqa: S311 - test traffic, not cryptography

    def add(self, spec: dict[str, Any]) -> Fault:
        action = str(spec.get("action") or ("status" if spec.get("status") else "delay"))
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
        status = int(spec.get("status") or (503 if action == "status" else 0))
        if action == "status" and not 400 <= status <= 599:
            raise ValueError("status must be a 4xx or 5xx code")
        count = spec.get("count")
        probability = spec.get("probability")
        if count is None and probability is None:
            count = 1
        retry_after = spec.get("retryAfter", spec.get("retry_after"))
        fault = Fault(
            id=str(uuid.uuid4()),
            method=str(spec.get("method") or "*").upper(),
            path=re.compile(str(spec.get("path") or ".*")),
            mailbox=str(spec["mailbox"]).lower() if spec.get("mailbox") else None,
            action=action,
            status=status,
            retry_after=str(retry_after) if retry_after is not None else None,
            delay=float(spec.get("delay") or (5.0 if action == "timeout" else 0.0)),
            remaining=int(count) if count is not None else None,
            probability=float(probability) if probability is not None else None,
            code=spec.get("code"),
            message=spec.get("message"),
        )
        with self._lock:
            self._rules.append(fault)
        return fault

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.describe() for f in self._rules]

    def clear(self) -> int:
        with self._lock:
            count = len(self._rules)
            self._rules.clear()
            return count

    def remove(self, fault_id: str) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [f for f in self._rules if f.id != fault_id]
            return len(self._rules) != before

    def match(self, method: str, path: str, mailbox: set[str] | None = None) -> Fault | None:
        """The first rule that fires for this request (consuming one of its `count`).
        `mailbox`: the names (address, id) of the request's mailbox, lower case."""
        with self._lock:
            for fault in self._rules:
                if fault.method not in ("*", method.upper()):
                    continue
                if fault.mailbox and fault.mailbox not in (mailbox or set()):
                    continue
                if not fault.path.search(path):
                    continue
                if fault.remaining is not None and fault.remaining <= 0:
                    continue
                if fault.probability is not None and self._random.random() >= fault.probability:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                fault.hits += 1
                return fault
        return None

    @staticmethod
    def apply(fault: Fault) -> None:
        """Act out a fault: sleep, raise the status as a GraphError, or drop the connection."""
        if fault.action == "delay":
            time.sleep(fault.delay)
            return
        if fault.action in ("timeout", "reset"):
            if fault.action == "timeout":
                time.sleep(fault.delay)
            raise ConnectionFault(fault.action, fault.id)
        code, message = DEFAULT_FAULT_BODIES.get(fault.status, ("UnknownError", "Injected fault."))
        headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
        inner: dict[str, Any] = {}
        if fault.status == 429:
            inner = {"code": "429", "message": "Please retry after", "status": "429"}
        raise GraphError(fault.status, fault.code or code, fault.message or message, headers, inner)
