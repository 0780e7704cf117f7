"""A simulated booking platform: plain HTTP on loopback, for local runs, tests and benchmarks.

It plays both sides of the platform's contract (SPEC §3.2, §3.3):

- it **receives** what the product posts to `PLATFORM_WEBHOOK_URL` (`POST /webhooks/calendar-sync`),
  verifies the Standard Webhooks signature with the platform secret and records each delivery once
  (a repeated `webhook-id` only bumps `duplicates`: the product delivers at least once);
- it **sends** signed booking events to the product (`send_booking`, or
  `POST /_platform/send-booking` for people using curl).

Each recorded delivery also lists `problems`: ways its body departs from SPEC §3.3 (unknown type,
missing fields, no `sequence`, ...). They are informational; the delivery is still accepted, so a
test can assert `not delivery["problems"]`.

Run it on its own with `python -m sandbox.platform` (secrets from the environment or
`local.settings.json`, as the product reads them); `GET /` then shows what arrived.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit
from uuid import uuid4
from zoneinfo import ZoneInfo

import requests

from sync_core.webhooks import SignatureError, new_message_id, sign, verify

__all__ = ["WEBHOOK_PATH", "PlatformSim", "main"]

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/calendar-sync"
BOOKING_EVENTS_PATH = "/api/bookings/events"
MAX_BODY = 1024 * 1024
SEND_TIMEOUT = 10.0

# SPEC §3.3: the fields each outbound event type carries in `data`.
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "blocker.upserted": (
        "id",
        "resource_id",
        "start",
        "end",
        "all_day",
        "show_as",
        "title",
        "source",
        "sequence",
    ),
    "blocker.deleted": ("id", "resource_id", "sequence"),
    "booking.synced": (
        "booking_id",
        "version",
        "resource_id",
        "mailbox",
        "event_id",
        "web_link",
        "online_meeting_url",
    ),
    "booking.failed": ("booking_id", "version", "resource_id", "error"),
    "booking.conflict": ("booking_id", "resource_id", "conflicts"),
    "credential.expiring": ("credential", "expires_at", "days_left", "rotated"),
    "mapping.error": ("resource_id", "mailbox", "error", "sequence"),
    "mapping.recovered": ("resource_id", "mailbox", "sequence"),
    "subscription.lost": ("resource_id", "mailbox", "sequence"),
    "platform.test": ("sequence",),
}
# "Every data carries resource_id and a sequence": not credential.expiring nor platform.test,
# which are per app.
PER_RESOURCE_TYPES = frozenset(EVENT_FIELDS) - {"credential.expiring", "platform.test"}
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")

Record = dict[str, Any]


def _now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def problems_of(body: Mapping[str, Any], content_type: str) -> list[str]:
    """How a delivery departs from SPEC §3.3 (empty when it conforms)."""
    found: list[str] = []
    if content_type.split(";", maxsplit=1)[0].strip().lower() != "application/json":
        found.append("content-type is not application/json")
    type_ = body.get("type")
    if type_ not in EVENT_FIELDS:
        found.append(f"unknown type {type_!r}")
    timestamp = body.get("timestamp")
    if not (isinstance(timestamp, str) and _RFC3339.fullmatch(timestamp)):
        found.append("timestamp is not RFC 3339 with offset")
    data = body.get("data")
    if not isinstance(data, dict):
        found.append("data is not an object")
        return found
    if isinstance(type_, str) and type_ in EVENT_FIELDS:
        required = set(EVENT_FIELDS[type_])
        if type_ in PER_RESOURCE_TYPES:
            required |= {"resource_id", "sequence"}
        found.extend(f"data.{name} is missing" for name in sorted(required - set(data)))
        if type_ in PER_RESOURCE_TYPES:
            sequence = data.get("sequence")
            if "sequence" in data and not (
                isinstance(sequence, int) and not isinstance(sequence, bool) and sequence >= 0
            ):
                found.append("data.sequence is not a non-negative integer")
            resource_id = data.get("resource_id")
            if "resource_id" in data and not (isinstance(resource_id, str) and resource_id):
                found.append("data.resource_id is not a non-empty string")
    return found


class PlatformSim:
    """The simulated platform; see the module docstring. Thread-safe."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        platform_secret: str,
        booking_secret: str,
        product_url: str | None = None,
        function_key: str | None = None,
    ) -> None:
        # Fail now, not on the first delivery, if a secret is not a usable whsec_ secret.
        sign(platform_secret, "msg_check", 0, b"")
        sign(booking_secret, "msg_check", 0, b"")
        self.host = host
        self.port = port
        self.platform_secret = platform_secret
        self.booking_secret = booking_secret
        self.product_url = product_url.rstrip("/") if product_url else None
        self.function_key = function_key or None
        self._lock = threading.Lock()
        self._received: list[Record] = []
        self._by_id: dict[str, Record] = {}
        self._rejected: list[Record] = []
        self._failed: list[Record] = []
        self._fail_queue: deque[int] = deque()
        self._delay_queue: deque[float] = deque()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> PlatformSim:
        if self._server is not None:
            raise RuntimeError("the platform simulator is already running")
        server = _Server((self.host, self.port), self)
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"platform-sim:{self.port}",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> PlatformSim:
        return self.start() if self._server is None else self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the platform simulator is not running; call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def webhook_url(self) -> str:
        return self.url + WEBHOOK_PATH

    # -- what arrived ----------------------------------------------------------------------

    def received(self, type: str | None = None) -> list[Record]:
        """Verified deliveries in arrival order (copies), optionally of one event type."""
        with self._lock:
            records = [r for r in self._received if type is None or r["type"] == type]
            return [_copy(r) for r in records]

    def rejected(self) -> list[Record]:
        """Deliveries refused with 4xx: `{"id", "status", "reason", "received_at"}`."""
        with self._lock:
            return [_copy(r) for r in self._rejected]

    def failed(self) -> list[Record]:
        """Deliveries answered with a `fail_next` status: `{"id", "status", "received_at"}`."""
        with self._lock:
            return [_copy(r) for r in self._failed]

    def clear(self) -> None:
        """Forget everything received, rejected and failed, and any pending `fail_next` or
        `delay_next`."""
        with self._lock:
            self._received.clear()
            self._by_id.clear()
            self._rejected.clear()
            self._failed.clear()
            self._fail_queue.clear()
            self._delay_queue.clear()

    def fail_next(self, count: int, status: int = 500) -> None:
        """Answer the next `count` deliveries with `status` (before verifying them)."""
        if count < 0 or not 100 <= status <= 599:
            raise ValueError("count must be >= 0 and status an HTTP status code")
        with self._lock:
            self._fail_queue.extend([status] * count)

    def delay_next(self, count: int, seconds: float) -> None:
        """Answer the next `count` deliveries only after `seconds` (a slow platform); a
        `fail_next` status, or the usual verification, follows the wait."""
        if count < 0 or not 0 <= seconds <= 300:
            raise ValueError("count must be >= 0 and seconds between 0 and 300")
        with self._lock:
            self._delay_queue.extend([seconds] * count)

    def wait_for(
        self, predicate: Callable[[list[Record]], object], timeout: float = 10.0
    ) -> list[Record]:
        """Poll `received()` until `predicate(received)` is truthy; return that list."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.received()
            if predicate(records):
                return records
            if time.monotonic() >= deadline:
                arrived = ", ".join(f"{r['type']} {r['id']}" for r in records) or "nothing"
                rejected = len(self.rejected())
                raise TimeoutError(
                    f"condition not met within {timeout:g} s; arrived: {arrived}"
                    + (f"; rejected: {rejected}" if rejected else "")
                )
            time.sleep(0.02)

    # -- booking events to the product ------------------------------------------------------

    def booking_event(self, type: str = "booking.created", **data_overrides: Any) -> Record:
        """A valid SPEC §3.2 booking event: tomorrow 09:00-10:30 Europe/Berlin, version 1."""
        zone = ZoneInfo("Europe/Berlin")
        day = datetime.now(zone).date() + timedelta(days=1)
        start = datetime.combine(day, clock_time(9, 0), zone)
        end = datetime.combine(day, clock_time(10, 30), zone)
        data: Record = {
            "id": "bk_" + uuid4().hex[:12],
            "version": 1,
            "resource_id": "room-42",
            "status": "cancelled" if type == "booking.cancelled" else "confirmed",
            "start": start.isoformat(timespec="seconds"),
            "end": end.isoformat(timespec="seconds"),
            "all_day": False,
            "time_zone": "Europe/Berlin",
            "title": "Sprint review",
            "notes": "Bring the demo laptop",
            "organizer": {"name": "Ada Lovelace", "email": "ada@contoso.example"},
            "guests": [{"name": "Alan Turing", "email": "alan@contoso.example"}],
            "private": False,
            "online_meeting": False,
        }
        data.update(data_overrides)
        timestamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return {"type": type, "timestamp": timestamp, "data": data}

    def send_booking(
        self,
        event: Mapping[str, Any] | bytes,
        *,
        webhook_id: str | None = None,
        timestamp: int | None = None,
        secret: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """POST `event` (a dict, or raw bytes sent as they are) to the product, signed.

        Signed with `secret` or the booking secret, with a fresh webhook id and the current time
        unless given; `extra_headers` are added last and may replace any header.
        """
        if self.product_url is None:
            raise RuntimeError("no product_url configured for the platform simulator")
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        headers = sign(
            self.booking_secret if secret is None else secret,
            webhook_id or new_message_id(),
            int(time.time()) if timestamp is None else timestamp,
            body,
        )
        headers["content-type"] = "application/json"
        if self.function_key:
            headers["x-functions-key"] = self.function_key
        headers.update(extra_headers or {})
        return requests.post(
            self.product_url + BOOKING_EVENTS_PATH, data=body, headers=headers, timeout=SEND_TIMEOUT
        )

    # -- server side (called from the handler threads) ----------------------------------------

    def _deliver(self, headers: Mapping[str, str], body: bytes) -> tuple[int, Record | None]:
        """Handle one POST to the webhook path: (status, JSON answer or None for no body)."""
        claimed_id = _claimed_id(headers)
        with self._lock:
            delay = self._delay_queue.popleft() if self._delay_queue else 0.0
        if delay:
            time.sleep(delay)
        with self._lock:
            if self._fail_queue:
                status = self._fail_queue.popleft()
                self._failed.append(
                    {"id": claimed_id, "status": status, "received_at": _now_text()}
                )
                return status, {"error": "simulated failure"}
        try:
            msg_id = verify([self.platform_secret], headers, body)
        except SignatureError as error:
            return self._reject(claimed_id, 401, error.reason)
        try:
            payload = json.loads(body)
        except ValueError:
            return self._reject(msg_id, 400, "body is not JSON")
        if not isinstance(payload, dict):
            return self._reject(msg_id, 400, "body is not a JSON object")
        content_type = _lower(headers).get("content-type", "")
        timestamp = _lower(headers).get("webhook-timestamp", "")
        with self._lock:
            existing = self._by_id.get(msg_id)
            if existing is not None:
                existing["duplicates"] += 1
                return 204, None
            record: Record = {
                "id": msg_id,
                "type": payload.get("type"),
                "timestamp": payload.get("timestamp"),
                "data": payload.get("data"),
                "received_at": _now_text(),
                "webhook_timestamp": int(timestamp),
                "duplicates": 0,
                "problems": problems_of(payload, content_type),
            }
            self._received.append(record)
            self._by_id[msg_id] = record
        return 204, None

    def _reject(self, msg_id: str | None, status: int, reason: str) -> tuple[int, Record]:
        with self._lock:
            self._rejected.append(
                {"id": msg_id, "status": status, "reason": reason, "received_at": _now_text()}
            )
        return status, {"error": reason}

    def _send_from_http(self, body: bytes) -> tuple[int, Record]:
        """`POST /_platform/send-booking`: an event, data overrides, or nothing for a default."""
        if self.product_url is None:
            return 409, {"error": "no product_url configured"}
        try:
            given = json.loads(body) if body.strip() else {}
        except ValueError:
            return 400, {"error": "body is not JSON"}
        if not isinstance(given, dict):
            return 400, {"error": "body is not a JSON object"}
        if "data" in given and "type" in given:
            event: Record = given
        else:
            overrides = dict(given)
            event = self.booking_event(str(overrides.pop("type", "booking.created")), **overrides)
        webhook_id = new_message_id()
        try:
            answer = self.send_booking(event, webhook_id=webhook_id)
        except requests.RequestException as error:
            return 502, {"error": f"could not reach the product: {type(error).__name__}"}
        return 200, {
            "webhook_id": webhook_id,
            "sent": event,
            "product_status": answer.status_code,
            "product_body": answer.text[:4000],
        }

    def _snapshot(self) -> Record:
        with self._lock:
            return {
                "received": [_copy(r) for r in self._received],
                "rejected": [_copy(r) for r in self._rejected],
                "failed": [_copy(r) for r in self._failed],
                "pending_failures": len(self._fail_queue),
            }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    block_on_close = False

    def __init__(self, address: tuple[str, int], sim: PlatformSim) -> None:
        self.sim = sim
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "PlatformSim/1"
    timeout = 30  # seconds an idle keep-alive connection is kept

    @property
    def sim(self) -> PlatformSim:
        return cast(_Server, self.server).sim

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/_platform/received":
            self._answer(200, self.sim._snapshot())
        elif path == "/":
            page = _render(self.sim._snapshot()).encode()
            self._write(200, page, "text/html; charset=utf-8")
        else:
            self._answer(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = self._body()
        if body is None:
            return
        path = urlsplit(self.path).path
        if path == WEBHOOK_PATH:
            headers = {name: value for name, value in self.headers.items()}
            status, answer = self.sim._deliver(headers, body)
            self._answer(status, answer)
        elif path == "/_platform/send-booking":
            self._answer(*self.sim._send_from_http(body))
        else:
            self._answer(404, {"error": "not found"})

    def _body(self) -> bytes | None:
        if self.headers.get("transfer-encoding"):
            self.close_connection = True
            self._answer(411, {"error": "send a content-length"})
            return None
        try:
            length = int(self.headers.get("content-length") or "0")
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._answer(400, {"error": "bad content-length"})
            return None
        if length > MAX_BODY:
            self.close_connection = True
            self._answer(413, {"error": "body too large"})
            return None
        return self.rfile.read(length)

    def _answer(self, status: int, payload: Mapping[str, Any] | None) -> None:
        if payload is None or status == 204:
            self._write(status, b"", None)
        else:
            self._write(status, json.dumps(payload).encode(), "application/json")

    def _write(self, status: int, body: bytes, content_type: str | None) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("content-type", content_type)
            self.send_header("x-content-type-options", "nosniff")
            self.send_header(
                "content-security-policy", "default-src 'none'; style-src 'self' 'unsafe-inline'"
            )
        if status != 204:
            self.send_header("content-length", str(len(body)))
        if self.close_connection:
            self.send_header("connection", "close")
        self.end_headers()
        if status != 204:
            self.wfile.write(body)


def _render(snapshot: Mapping[str, Any]) -> str:
    """The read-only HTML view; every value is escaped."""

    def cell(value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(value, indent=1, sort_keys=True)
        return f"<td><pre>{html.escape(text)}</pre></td>"

    def table(records: list[Record], columns: tuple[str, ...]) -> str:
        if not records:
            return "<p>none</p>"
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        rows = "".join(
            "<tr>" + "".join(cell(r.get(c)) for c in columns) + "</tr>" for r in reversed(records)
        )
        return f"<table><tr>{head}</tr>{rows}</table>"

    received = snapshot["received"]
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta http-equiv='refresh' content='5'><title>Platform simulator</title>"
        "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:4px;"
        "vertical-align:top;text-align:left}table{border-collapse:collapse}pre{margin:0}</style>"
        "</head><body><h1>Platform simulator</h1>"
        f"<p>{len(received)} received (newest first); JSON at "
        "<a href='/_platform/received'>/_platform/received</a>.</p>"
        + table(
            received,
            ("received_at", "type", "id", "duplicates", "data", "problems"),
        )
        + "<h2>Rejected</h2>"
        + table(snapshot["rejected"], ("received_at", "status", "reason", "id"))
        + "<h2>Failed on purpose</h2>"
        + table(snapshot["failed"], ("received_at", "status", "id"))
        + "</body></html>"
    )


def _copy(record: Record) -> Record:
    copied: Record = json.loads(json.dumps(record))
    return copied


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _claimed_id(headers: Mapping[str, str]) -> str | None:
    """The webhook id a request claims, before it is verified (only for the records)."""
    value = _lower(headers).get("webhook-id")
    return value[:256] if value else None


# -- running it by hand -------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def _setting(name: str, settings: Mapping[str, Any]) -> str:
    value = os.environ.get(name) or settings.get(name) or ""
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.platform",
        description="Simulated booking platform: receives the product's webhooks, sends bookings.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9080, help="default 9080, as in the example")
    parser.add_argument("--product-url", default="http://127.0.0.1:7071")
    parser.add_argument("--settings", type=Path, default=ROOT / "local.settings.json")
    args = parser.parse_args(argv)
    values: Mapping[str, Any] = {}
    if args.settings.is_file():
        values = json.loads(args.settings.read_text(encoding="utf-8")).get("Values", {})
    missing = [
        name
        for name in ("PLATFORM_WEBHOOK_SECRET", "BOOKING_WEBHOOK_SECRET")
        if not _setting(name, values)
    ]
    if missing:
        print(f"error: setting {missing[0]}: is missing (environment or {args.settings})")
        return 2
    sim = PlatformSim(
        host=args.host,
        port=args.port,
        platform_secret=_setting("PLATFORM_WEBHOOK_SECRET", values),
        booking_secret=_setting("BOOKING_WEBHOOK_SECRET", values),
        product_url=args.product_url,
        function_key=_setting("FUNCTIONS_KEY", values) or None,
    ).start()
    print(
        f"Platform simulator on {sim.url}\n"
        f"  webhooks in: {sim.webhook_url}\n"
        f"  view:        {sim.url}/  (JSON: {sim.url}/_platform/received)\n"
        f"  send:        curl -X POST {sim.url}/_platform/send-booking "
        '-d \'{"resource_id": "room-42"}\'',
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
