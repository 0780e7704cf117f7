"""A bounded log of the requests the sandbox answered (Graph, login, managed identity)."""

from __future__ import annotations

import itertools
import re
import threading
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from sandbox import timeutil
from sandbox.messages import Request, Response

MAX_ENTRIES = 50_000
SECRET_PARAMS = {"code", "client_secret", "client_assertion", "access_token", "sig", "token"}
USER = re.compile(r"^/v1\.0/users/([^/]+)", re.IGNORECASE)


def mailbox_of(path: str) -> str | None:
    match = USER.match(path)
    return match.group(1).lower() if match else None


def safe_query(raw: str) -> str:
    pairs = [
        (name, "***" if name.lower() in SECRET_PARAMS else value)
        for name, value in parse_qsl(raw, keep_blank_values=True)
    ]
    return urlencode(pairs)


class RequestLog:
    def __init__(self, resolve: Callable[[str], str] | None = None) -> None:
        # Maps a path's user segment (address or id) to the mailbox's address.
        self.resolve = resolve
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=MAX_ENTRIES)
        self._seq = itertools.count(1)

    def record(
        self,
        request: Request,
        response: Response | None,
        kind: str,
        started: float,
        finished: float,
        app_id: str | None = None,
        error: str | None = None,
    ) -> None:
        query = safe_query(request.raw_query)
        mailbox = mailbox_of(request.path)
        if mailbox and self.resolve is not None:
            mailbox = self.resolve(mailbox)
        entry = {
            "time": timeutil.graph_stamp(timeutil.now()),
            "kind": kind,
            "method": request.method,
            "path": request.path + (f"?{query}" if query else ""),
            "mailbox": mailbox,
            "status": response.status if response is not None else None,
            "durationMs": round((finished - started) * 1000, 1),
            "throttled": bool(response and response.throttled),
            "fault": response.fault if response is not None else None,
            "batch": request.batch_parent,
            "requestId": request.request_id,
            "app": app_id or (response.app if response is not None else None),
            "error": error,
        }
        with self._lock:
            entry["seq"] = next(self._seq)
            self._entries.append(entry)

    def entries(
        self, since: int = 0, mailbox: str | None = None, kind: str | None = None
    ) -> list[dict[str, Any]]:
        with self._lock:
            return [
                e
                for e in self._entries
                if e["seq"] > since
                and (mailbox is None or e["mailbox"] == mailbox.lower())
                and (kind is None or e["kind"] == kind)
            ]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
