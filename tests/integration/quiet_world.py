"""The product's services driven in this process, step by step, for the quiet-state tests.

``World`` holds what lives for a whole test (Azurite, the simulated tenant, the simulated
platform, a sink that answers Graph's subscription validation) and builds a fresh ``Services``
with two mapped rooms for each hypothesis example. Booking events go in as signed webhooks
through ``api.booking_events``; the queues are drained here, synchronously, with the handlers
``function_app.py`` calls (``bookings.apply``, ``inbound.sync_mailbox``, ``Platform.deliver``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from sandbox import Sandbox
from sandbox.platform import PlatformSim
from sync_core import api, webhooks
from sync_core.admin import mappings as admin
from sync_core.admin import resync
from sync_core.config import load_settings
from sync_core.domain.booking import BOOKING_PROPERTY_ID
from sync_core.inbound import sync as inbound
from sync_core.outbound import apply as bookings
from sync_core.services import Services
from sync_core.store.queues import APPLY_BOOKING, DELIVER, SYNC_MAILBOX, decode_message
from sync_core.web import Request
from tests.conftest import ROOM_A, ROOM_B, wipe

# desk-a shares room-a's mailbox: it gets the same Outlook time through its own filters.
RESOURCES = {"room-a": ROOM_A, "room-b": ROOM_B, "desk-a": ROOM_A}
PRIVACY = {"room-a": "full", "room-b": "busy_only", "desk-a": "full"}
FILTERS: dict[str, dict[str, Any]] = {
    "desk-a": {"ignore_all_day": True, "ignore_title_pattern": "lunch"},
}
MAILBOXES = (ROOM_A, ROOM_B)
QUEUES = (APPLY_BOOKING, SYNC_MAILBOX, DELIVER)
WRITES = ("POST", "PATCH", "DELETE")

# Windows zone names (what Outlook writes) and the IANA zone each stands for.
WINDOWS_ZONES = {
    "UTC": "UTC",
    "W. Europe Standard Time": "Europe/Berlin",
    "GMT Standard Time": "Europe/London",
    "Eastern Standard Time": "America/New_York",
    "India Standard Time": "Asia/Kolkata",
    "AUS Eastern Standard Time": "Australia/Sydney",
}


class NotQuiet(AssertionError):
    """The queues did not run dry: some work keeps queuing more work."""


class _Sink(BaseHTTPRequestHandler):
    """Answers Graph's validation requests; change notifications are dropped (the tests read
    mailboxes through the safety sweep, so the order of work stays deterministic)."""

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        token = parse_qs(urlsplit(self.path).query).get("validationToken")
        if token:
            body = token[0].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def notification_sink() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def booking_of(event: dict[str, Any]) -> str | None:
    for prop in event.get("singleValueExtendedProperties") or []:
        if str(prop.get("id", "")).lower() == BOOKING_PROPERTY_ID.lower():
            return str(prop.get("value"))
    return None


def iana(name: str | None) -> ZoneInfo:
    """A zone from an IANA or Windows name, as the sandbox stores it."""
    text = (name or "UTC").strip()
    if text.lower() in ("utc", "tzone://microsoft/utc"):
        return ZoneInfo("UTC")
    for windows, zone in WINDOWS_ZONES.items():
        if windows.lower() == text.lower():
            return ZoneInfo(zone)
    try:
        from tzlocal.windows_tz import win_tz

        lowered = {k.lower(): v for k, v in win_tz.items()}
        if text.lower() in lowered:
            return ZoneInfo(lowered[text.lower()])
    except ImportError:  # pragma: no cover
        pass
    return ZoneInfo(text)


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def local_date(text: str, zone: str | None) -> date:
    """The calendar date an instant of the raw store falls on in the event's own zone."""
    moment = instant(text)
    local = moment.astimezone(iana(zone))
    if local.time() != datetime.min.time() and moment.time() == datetime.min.time():
        return moment.date()  # stored as a floating date (midnight UTC)
    return local.date()


@dataclass
class DrainStats:
    handled: Counter[str] = field(default_factory=Counter)
    waited: float = 0.0

    def __str__(self) -> str:
        parts = [f"{n} {q}" for q, n in sorted(self.handled.items())]
        return ", ".join(parts) or "nothing"


@dataclass
class World:
    tenant: Sandbox
    platform: PlatformSim
    env: dict[str, str]
    storage: str
    svc: Services | None = None

    def fresh(self) -> Services:
        """Clean storage, tenant and platform; new services with room-a and room-b mapped."""
        self.close()
        wipe(self.storage)
        control = self.tenant.control
        control.reset()
        control.clear_faults()
        control.clear_requests()
        control.clear_deliveries()
        self.platform.clear()
        svc = Services(load_settings(self.env, Path("/nonexistent")))
        for resource_id, mailbox in RESOURCES.items():
            admin.put_mapping(
                svc.mappings,
                resource_id,
                {
                    "mailbox": mailbox,
                    "privacy": PRIVACY[resource_id],
                    "filters": FILTERS.get(resource_id, {}),
                },
            )
        self.svc = svc
        return svc

    def close(self) -> None:
        if self.svc is not None and "_pool" in self.svc.__dict__:
            self.svc._pool.shutdown(wait=False)
        self.svc = None

    @property
    def services(self) -> Services:
        assert self.svc is not None
        return self.svc

    # -- input -------------------------------------------------------------------------------

    def send_booking(self, event: dict[str, Any]) -> int:
        """A signed booking webhook through the product's intake, as the HTTP route calls it."""
        body = json.dumps(event).encode()
        headers = webhooks.sign(
            self.env["BOOKING_WEBHOOK_SECRET"], webhooks.new_message_id(), int(time.time()), body
        )
        headers["content-type"] = "application/json"
        request = Request(
            method="POST",
            url="http://localhost/api/bookings/events",
            headers={k.lower(): v for k, v in headers.items()},
            body=body,
        )
        return api.booking_events(request, self.services).status

    # -- the queues, run here ----------------------------------------------------------------

    def drain(self, limit: int = 600, patience: float = 45.0) -> DrainStats:
        """Run queued work until every queue is empty, also waiting out delayed messages
        (retries, lease-busy). ``NotQuiet`` if more than ``limit`` messages were needed."""
        svc = self.services
        stats = DrainStats()
        waited_since: float | None = None
        while True:
            progressed = False
            for name in QUEUES:
                queue = svc.queues.queue(name)
                for message in queue.receive_messages(max_messages=32, visibility_timeout=120):
                    payload = json.loads(decode_message(message.content))
                    self._handle(name, payload, redelivered=(message.dequeue_count or 1) > 1)
                    queue.delete_message(message)
                    stats.handled[name] += 1
                    progressed = True
                    if sum(stats.handled.values()) > limit:
                        raise NotQuiet(
                            f"the queues did not run dry after {limit} messages ({stats}); "
                            f"last: {name} {payload}"
                        )
            if progressed:
                waited_since = None
                continue
            if not any(svc.queues.depth(name) for name in QUEUES):
                return stats
            # Only invisible (delayed) messages are left: wait for them as the host would.
            now = time.monotonic()
            waited_since = waited_since or now
            if now - waited_since > patience:
                raise NotQuiet(f"delayed messages still queued after {patience:.0f} s ({stats})")
            time.sleep(0.25)
            stats.waited += 0.25

    def _handle(self, queue: str, payload: dict[str, Any], *, redelivered: bool) -> None:
        svc = self.services
        if queue == APPLY_BOOKING:
            bookings.apply(svc, payload, redelivered=redelivered)
        elif queue == SYNC_MAILBOX:
            inbound.sync_mailbox(svc, payload)
        else:
            svc.platform.deliver(payload)

    def sweep(self) -> None:
        inbound.safety_sweep(self.services)

    def resync_all(self) -> None:
        for resource_id in RESOURCES:
            resync.resync(self.services, resource_id)

    # -- what happened -----------------------------------------------------------------------

    def graph_writes(self) -> list[str]:
        """Writes to the mailboxes' event routes since the request log was last cleared."""
        return [
            f"{r['method']} {r['path'].split('?', 1)[0]} ({r['mailbox']})"
            for r in self.tenant.control.requests(kind="graph")
            if r["method"] in WRITES and r.get("mailbox") and "/events" in r["path"]
        ]

    def repairs_since(self, moment: datetime) -> list[str]:
        found = []
        for resource_id in RESOURCES:
            entries, _ = self.services.history.page(resource_id=resource_id, page_size=200)
            found += [
                f"{e.resource_id} {e.action} {e.subject}: {e.detail}"
                for e in entries
                if e.action == "booking.repair" and e.at >= moment
            ]
        return found


def window(today: date, days: int) -> tuple[datetime, datetime]:
    start = datetime.combine(today, datetime.min.time(), UTC)
    return start, start + timedelta(days=days)
