"""Fault soak: bookings and Outlook changes under ~20 % Graph faults, duplicated and reordered
booking events, a killed worker and an Azurite restart; then check nothing was lost, duplicated
or left stale.

The same code runs bounded in CI (`tests/e2e/test_soak.py`) and longer here:

    .venv/bin/python bench/soak.py [--seed N] [--bookings 40] [--person-events 10]

Definitions (per booking id / per Outlook event the "person" made):

- **lost**: a live booking (final state not cancelled) with no event in its room's calendar, or a
  person's event still in a room with no live blocker at the platform.
- **duplicated**: more than one calendar event (across all rooms) for one booking id, or more than
  one live blocker for one Outlook event.
- **stale**: a calendar event for a cancelled booking, in another room than the final one, or with
  another subject than the final title; a live blocker for an Outlook event that was deleted, for
  one of the product's own events, or whose title is not the event's final subject.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from azure.storage.queue import QueueServiceClient  # noqa: E402

from devhost.azurite import Azurite, free_port  # noqa: E402
from devhost.stack import HostProcess  # noqa: E402
from sandbox.client import SandboxControl  # noqa: E402
from sandbox.platform import PlatformSim  # noqa: E402
from sync_core.domain.booking import BOOKING_PROPERTY_ID  # noqa: E402

ROOMS: dict[str, str] = {
    "room-42": "room.berlin@contoso.example",
    "room-43": "berlin.havel@contoso.example",
    "room-44": "berlin.tegel@contoso.example",
}
WORK_QUEUES = ("apply-booking", "sync-mailbox", "deliver")
EVENT_PATHS = r"/users/[^/]+/(calendar/)?(events|calendarView)"
# Crash recovery waits for timeouts: a queue message the killed worker had fetched comes back
# after the processing visibility (600 s in devhost, as in the Functions host), and a mailbox
# lease it held expires after 300 s (`CursorRepository.LEASE`). The soak's hosts shorten both
# so that what the SIGKILL strands is redelivered within the run; nothing else is changed.
PROCESSING_VISIBILITY = 20
LEASE_SECONDS = 30
HOST_BOOT = (
    "import sys; import devhost.queue_trigger as q; "
    "from sync_core.store.subscriptions import CursorRepository as C; "
    f"q.PROCESSING_VISIBILITY = {PROCESSING_VISIBILITY}; "
    f"C.LEASE = {LEASE_SECONDS}; "
    "from devhost.host import main; raise SystemExit(main())"
)


@dataclass
class SoakConfig:
    seed: int = 1
    bookings: int = 12
    max_versions: int = 4
    person_events: int = 4  # created per room; about as many updates/deletes follow
    fault_rate: float = 0.2
    pace: float = 0.08  # seconds between actions
    drain_timeout: float = 90.0


@dataclass
class SoakResult:
    seed: int
    counts: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    poison: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0

    def summary(self) -> str:
        counts = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        return (
            f"soak seed={self.seed} lost={len(self.lost)} duplicated={len(self.duplicated)} "
            f"stale={len(self.stale)} poison={sum(self.poison.values())} "
            f"elapsed={self.elapsed:.1f}s {counts}"
        )

    def report(self) -> str:
        """The summary, then every lost, duplicated or stale item on a line of its own."""
        lines = [self.summary()]
        for label, items in (
            ("lost", self.lost),
            ("duplicated", self.duplicated),
            ("stale", self.stale),
        ):
            lines += [f"  {label}: {item}" for item in items]
        return "\n".join(lines)


def _slot(day: int, hour: int, minute: int = 0, minutes: int = 45) -> tuple[datetime, datetime]:
    start = (datetime.now(UTC) + timedelta(days=day)).replace(
        hour=hour, minute=minute, second=0, microsecond=0
    )
    return start, start + timedelta(minutes=minutes)


def _graph_time(moment: datetime) -> dict[str, str]:
    return {"dateTime": moment.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}


def _booking_id(event: dict[str, Any]) -> str | None:
    for prop in event.get("singleValueExtendedProperties") or []:
        if str(prop.get("id", "")).lower() == BOOKING_PROPERTY_ID.lower():
            return str(prop.get("value"))
    return None


class Soak:
    def __init__(
        self,
        control: SandboxControl,
        tenant_env: dict[str, str],
        platform: PlatformSim,
        workdir: Path,
        config: SoakConfig,
        function_key: str,
    ) -> None:
        self.control = control
        self.platform = platform
        self.config = config
        self.rng = random.Random(config.seed)
        self.key = function_key
        self.workdir = workdir
        self.azurite = Azurite(location=workdir / "azurite", log=workdir / "azurite.log")
        self.env = tenant_env | {
            "AzureWebJobsStorage": self.azurite.connection_string,
            "PLATFORM_WEBHOOK_URL": platform.webhook_url,
            "FUNCTIONS_KEY": function_key,
            "RETRY_BASE_SECONDS": "1",
            "RETRY_ATTEMPTS": "12",
            "EVENT_CATEGORY": "Booked via platform",
        }
        self.port = free_port()
        self.host: HostProcess | None = None
        self.counts: Counter[str] = Counter()
        self.final: dict[str, dict[str, Any]] = {}  # booking id -> highest accepted data
        self.person: dict[str, dict[str, str]] = {room: {} for room in ROOMS}  # id -> subject
        self.rejected: list[str] = []

    # -- plumbing ---------------------------------------------------------------------------

    def start_host(self) -> None:
        # A fixed port, so Graph's notification URLs survive a restart.
        log = self.workdir / "devhost.log"
        self.host = HostProcess(self.env, port=self.port, log=log, boot=HOST_BOOT).wait_ready(60)
        self.platform.product_url = self.host.base

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        assert self.host is not None
        return requests.request(
            method,
            self.host.base + path,
            headers={"x-functions-key": self.key},
            timeout=30,
            **kwargs,
        )

    def send(self, event: dict[str, Any], webhook_id: str) -> None:
        """Send like a real platform: resend (same webhook id) until a 2xx answer."""
        deadline = time.monotonic() + 90
        while True:
            self.counts["booking_sends"] += 1
            try:
                answer = self.platform.send_booking(event, webhook_id=webhook_id)
            except requests.RequestException:
                answer = None
            if answer is not None and 200 <= answer.status_code < 300:
                self.counts["booking_accepted"] += 1
                if answer.status_code == 200 and answer.json().get("status") == "duplicate":
                    self.counts["booking_duplicate_answers"] += 1
                data = event["data"]
                known = self.final.get(data["id"])
                if known is None or (data["version"], event["type"]) > (
                    known["version"],
                    known["type"],
                ):
                    self.final[data["id"]] = {**data, "type": event["type"]}
                return
            if answer is not None and answer.status_code < 500 and answer.status_code != 429:
                self.rejected.append(f"{webhook_id}: {answer.status_code} {answer.text[:200]}")
                return
            self.counts["booking_resends"] += 1
            if time.monotonic() > deadline:
                raise RuntimeError(f"booking event {webhook_id} never accepted")
            time.sleep(0.3)

    def queue_depths(self) -> dict[str, int]:
        service = QueueServiceClient.from_connection_string(self.azurite.connection_string)
        depths: dict[str, int] = {}
        for queue in service.list_queues():
            props = service.get_queue_client(queue.name).get_queue_properties()
            depths[queue.name] = int(props.approximate_message_count or 0)
        return depths

    def drain(self, quiet: float = 4.0) -> None:
        deadline = time.monotonic() + self.config.drain_timeout
        seen, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            try:
                depths = self.queue_depths()
            except Exception:  # storage briefly unavailable: poll again
                time.sleep(0.5)
                continue
            busy = any(depths.get(q, 0) for q in WORK_QUEUES)
            arrived = len(self.platform.received())
            if busy or arrived != seen:
                seen, quiet_since = arrived, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet:
                return
            time.sleep(0.25)
        raise RuntimeError(
            f"did not drain within {self.config.drain_timeout:.0f} s: {self.queue_depths()}"
        )

    # -- the workload -----------------------------------------------------------------------

    def booking_schedule(self) -> list[tuple[dict[str, Any], str]]:
        """Per booking: versions 1..n (updates retitle and move in time; maybe a final cancel),
        adjacent versions swapped now and then (out of order), some sent twice (same webhook
        id), bookings interleaved."""
        per_booking: list[list[tuple[dict[str, Any], str]]] = []
        for i in range(self.config.bookings):
            room = self.rng.choice(sorted(ROOMS))
            booking_id = f"bk_soak_{self.config.seed}_{i}"
            versions = self.rng.randint(1, self.config.max_versions)
            cancel = self.rng.random() < 0.3
            events: list[tuple[dict[str, Any], str]] = []
            for version in range(1, versions + 1 + int(cancel)):
                start, end = _slot(1 + i % 6, 6 + (i // 6) % 4, 0, 30 + 5 * version)
                if version > versions:
                    kind = "booking.cancelled"
                else:
                    kind = "booking.created" if version == 1 else "booking.updated"
                event = self.platform.booking_event(
                    kind,
                    id=booking_id,
                    version=version,
                    resource_id=room,
                    title=f"Soak {i} v{version}",
                    start=start.isoformat(timespec="seconds"),
                    end=end.isoformat(timespec="seconds"),
                    time_zone="UTC",
                )
                events.append((event, f"msg_soak_{self.config.seed}_{i}_{version}"))
            for j in range(len(events) - 1):
                if self.rng.random() < 0.35:
                    events[j], events[j + 1] = events[j + 1], events[j]
                    self.counts["reordered_pairs"] += 1
            for j in range(len(events) - 1, -1, -1):
                if self.rng.random() < 0.3:  # the same delivery again, later
                    at = self.rng.randint(j + 1, len(events))
                    events.insert(at, events[j])
                    self.counts["duplicate_sends"] += 1
            if len(events) > 1 and self.rng.random() < 0.3:  # an old version after the newest
                events.append(events[0])
                self.counts["stale_resends"] += 1
            per_booking.append(events)
        merged: list[tuple[dict[str, Any], str]] = []
        while any(per_booking):
            queue = self.rng.choice([q for q in per_booking if q])
            merged.append(queue.pop(0))
        return merged

    def person_action(self) -> None:
        """One Outlook change by a person: create, retitle/move, or delete an event."""
        room = self.rng.choice(sorted(ROOMS))
        mailbox = ROOMS[room]
        live = self.person[room]
        roll = self.rng.random()
        if not live or roll < 0.5:
            n = self.counts["person_creates"]
            start, end = _slot(1 + n % 6, 13 + n % 5, 15)
            subject = f"Person {room} {n}"
            made = self.control.create_event(
                mailbox,
                {"subject": subject, "start": _graph_time(start), "end": _graph_time(end)},
            )
            live[made["id"]] = subject
            self.counts["person_creates"] += 1
        elif roll < 0.8:
            event_id = self.rng.choice(sorted(live))
            subject = f"{live[event_id].split(' upd')[0]} upd{self.counts['person_updates']}"
            start, end = _slot(1 + self.rng.randint(0, 5), 18, 30)
            self.control.update_event(
                mailbox,
                event_id,
                {"subject": subject, "start": _graph_time(start), "end": _graph_time(end)},
            )
            live[event_id] = subject
            self.counts["person_updates"] += 1
        else:
            event_id = self.rng.choice(sorted(live))
            self.control.delete_event(mailbox, event_id)
            del live[event_id]
            self.counts["person_deletes"] += 1

    def add_faults(self) -> None:
        rate = self.config.fault_rate
        # Each fault is checked in turn; the shares add up to about `rate` of event calls.
        shares = (
            ({"status": 429, "retry_after": 1}, 0.35),
            ({"status": 503}, 0.25),
            ({"action": "timeout", "delay": 0.5}, 0.2),
            ({"action": "reset"}, 0.2),
        )
        left = 1.0
        for kwargs, share in shares:
            probability = rate * share / left  # conditional on the earlier ones not firing
            left -= rate * share
            self.control.add_fault(EVENT_PATHS, "*", probability=probability, **kwargs)

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> SoakResult:
        started = time.monotonic()
        self.azurite.start()
        self.start_host()
        try:
            for room, mailbox in ROOMS.items():
                self.admin(
                    "PUT",
                    f"/api/admin/mappings/{room}",
                    json={"mailbox": mailbox, "privacy": "full"},
                ).raise_for_status()
            self.drain(quiet=2.0)
            self.add_faults()
            self.workload()
            self.control.clear_faults()
            logged = [r for r in self.control.requests(kind="graph") if "/users/" in r["path"]]
            self.counts["graph_requests_logged"] = len(logged)
            self.counts["graph_faulted"] = sum(
                1 for r in logged if r.get("fault") or r.get("error")
            )
            self.drain()
            swept = self.admin("POST", "/admin/functions/safety_sweep", json={"input": ""})
            swept.raise_for_status()
            self.drain()
            result = self.check()
        finally:
            if self.host is not None:
                self.host.stop()
            self.control.clear_faults()
            self.azurite.stop()
        result.elapsed = time.monotonic() - started
        return result

    def workload(self) -> None:
        schedule = self.booking_schedule()
        person_total = self.config.person_events * len(ROOMS) * 2
        actions: list[tuple[str, Any]] = [("booking", item) for item in schedule]
        actions += [("person", None)] * person_total
        self.rng.shuffle(actions)
        kill_at = len(actions) * 2 // 5
        restart_at = len(actions) * 7 // 10
        for index, (kind, item) in enumerate(actions):
            if index == kill_at:
                assert self.host is not None
                self.host.kill()
                self.counts["worker_kills"] += 1
                self.start_host()
            if index == restart_at:
                self.azurite.stop()
                self.counts["azurite_restarts"] += 1
                # Back in 8 s; sends meanwhile fail with 5xx and are resent.
                threading.Timer(8.0, self.azurite.start).start()
            if kind == "booking":
                event, webhook_id = item
                self.send(event, webhook_id)
            else:
                self.person_action()
            time.sleep(self.config.pace)

    def check(self) -> SoakResult:
        result = SoakResult(seed=self.config.seed, counts=dict(self.counts))
        # Calendars against the final booking states.
        found: dict[str, list[tuple[str, str]]] = {}
        product_event_ids: dict[str, str] = {}
        calendar_events = 0
        for room, mailbox in ROOMS.items():
            for event in self.control.events(mailbox):
                booking_id = _booking_id(event)
                if booking_id is not None:
                    calendar_events += 1
                    found.setdefault(booking_id, []).append((room, str(event.get("subject"))))
                    product_event_ids[str(event["id"])] = booking_id
        live_bookings = 0
        for booking_id, data in sorted(self.final.items()):
            events = found.pop(booking_id, [])
            if data["type"] in ("booking.cancelled", "booking.deleted"):
                if events:
                    result.stale.append(f"{booking_id} cancelled but in {events}")
                continue
            live_bookings += 1
            if not events:
                result.lost.append(f"{booking_id} ({data['resource_id']}) has no event")
            elif len(events) > 1:
                result.duplicated.append(f"{booking_id} has {len(events)} events: {events}")
            elif events[0] != (data["resource_id"], data["title"]):
                result.stale.append(
                    f"{booking_id} is {events[0]}, expected {(data['resource_id'], data['title'])}"
                )
        for booking_id, events in found.items():
            result.stale.append(f"event(s) for unknown booking {booking_id}: {events}")
        # Blockers: the latest record per blocker id, by sequence.
        latest: dict[str, dict[str, Any]] = {}
        for record in self.platform.received():
            if record["type"] not in ("blocker.upserted", "blocker.deleted"):
                continue
            data = record["data"]
            known = latest.get(data["id"])
            if known is None or data["sequence"] > known["data"]["sequence"]:
                latest[data["id"]] = record
        live: dict[tuple[str, str], list[str]] = {}
        for record in latest.values():
            if record["type"] == "blocker.upserted":
                data = record["data"]
                key = (data["resource_id"], data["source"]["event_id"])
                live.setdefault(key, []).append(str(data["title"]))
        person_live = 0
        for room, made in self.person.items():
            for event_id, subject in made.items():
                person_live += 1
                titles = live.pop((room, event_id), [])
                if not titles:
                    result.lost.append(f"no blocker for {room} event {subject!r}")
                elif len(titles) > 1:
                    result.duplicated.append(f"{len(titles)} blockers for {room} {subject!r}")
                elif titles[0] != subject:
                    result.stale.append(f"blocker {titles[0]!r} for {room}, expected {subject!r}")
        for (room, event_id), titles in live.items():
            own = ""
            if event_id in product_event_ids:
                own = f" (the product's own event for {product_event_ids[event_id]})"
            result.stale.append(f"blocker {titles} for gone event {room}/{event_id}{own}")
        result.poison = {
            name: depth
            for name, depth in self.queue_depths().items()
            if name.endswith("-poison") and depth
        }
        result.counts.update(
            bookings=len(self.final),
            live_bookings=live_bookings,
            calendar_events=calendar_events,
            person_events_live=person_live,
            blockers_received=sum(
                1 for r in self.platform.received() if r["type"].startswith("blocker.")
            ),
            rejected_sends=len(self.rejected),
        )
        result.stale.extend(f"rejected: {r}" for r in self.rejected)
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    parser.add_argument("--bookings", type=int, default=40)
    parser.add_argument("--person-events", type=int, default=10)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _stack import KEY, TenantProcess

    state = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    tenant = TenantProcess(state / "m365").start()
    values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    platform = PlatformSim(
        platform_secret=values["PLATFORM_WEBHOOK_SECRET"],
        booking_secret=values["BOOKING_WEBHOOK_SECRET"],
        function_key=KEY,
    ).start()
    config = SoakConfig(
        seed=args.seed,
        bookings=args.bookings,
        person_events=args.person_events,
        drain_timeout=300.0,
    )
    print(f"soak seed={config.seed} (rerun with --seed {config.seed}); state in {state}")
    env = {str(k): str(v) for k, v in values.items()} | tenant.env()
    try:
        result = Soak(tenant.control, env, platform, state, config, KEY).run()
    finally:
        platform.stop()
        tenant.stop()
    print(result.report())
    bad = result.lost or result.duplicated or result.stale or result.poison
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
