"""The worker dies at every step of ``apply_booking`` and ``sync_mailbox``; the redelivery finishes.

Each scenario is run once cleanly while every storage, queue, Graph and platform call is counted
(``Killer``). Then, for each call 1..N, a fresh world runs the scenario again and the worker dies
just before that call (``Crash``, a BaseException, so no ``except Exception`` in the product can
swallow it); N + 1 dies after the handler returned but before its queue message was deleted. From
the moment of death every call of that worker's clients fails too, its threads included, so
nothing it had not already sent reaches storage, Graph or the platform.

The message then becomes visible again and another worker takes it: new ``Services`` built from
the settings (a new process: no cache, no sequence, no ETag of the dead one), a mailbox lease the
dead worker held has run out, and the queues are drained with the handlers the function app
calls. After a safety sweep, drained too:

- every live booking has exactly one event, in its room, indexed as the service's own;
- the platform received ``booking.synced`` for the booking's last version at least once (and
  ``booking.conflict`` or ``booking.failed`` where the scenario has one);
- the platform's blockers (the newest delivery per blocker id, by ``sequence``, SPEC §3.3) are
  exactly the blocking events people have in the rooms' calendars.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sync_core.config import load_settings
from sync_core.domain.inbound import BLOCKING, blocker_id
from sync_core.graph import GraphClient
from sync_core.platform import Platform
from sync_core.services import Services
from sync_core.store.queues import APPLY_BOOKING, SYNC_MAILBOX, QueueStore, decode_message
from sync_core.store.tables import TableStore
from tests.integration.quiet_world import MAILBOXES, RESOURCES, World, booking_of

ROOM_A, ROOM_B = RESOURCES["room-a"], RESOURCES["room-b"]
DAY = (datetime.now(UTC) + timedelta(days=2)).date()


class Crash(BaseException):
    """The worker process dies here."""


@dataclass
class Killer:
    """Counts the calls a worker makes to the outside and kills it at one of them."""

    kill_at: int | None = None
    armed: bool = False
    calls: list[str] = field(default_factory=list)
    dead: list[object] = field(default_factory=list)  # the dead worker's clients
    lock: threading.Lock = field(default_factory=threading.Lock)

    def arm(self, svc: Services, kill_at: int | None) -> None:
        with self.lock:
            self.kill_at, self.armed, self.calls, self.dead = kill_at, True, [], []
            self.svc = svc

    def disarm(self) -> None:
        with self.lock:
            self.armed = False

    def step(self, owner: object, label: str) -> None:
        with self.lock:
            if any(owner is d for d in self.dead):
                raise Crash(f"{label}: the worker is dead")
            if not self.armed:
                return
            self.calls.append(label)
            if len(self.calls) == self.kill_at:
                svc = self.svc
                self.dead = [svc.tables, svc.queues, svc.graph, svc.platform]
                self.armed = False
                raise Crash(label)


def _instrument(
    monkeypatch: pytest.MonkeyPatch,
    killer: Killer,
    cls: type,
    name: str,
    label: Callable[..., str],
) -> None:
    real = getattr(cls, name)

    @functools.wraps(real)
    def wrapper(self: object, *args: Any, **kwargs: Any) -> Any:
        killer.step(self, label(*args, **kwargs))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapper)


@pytest.fixture
def killer(monkeypatch: pytest.MonkeyPatch) -> Killer:
    found = Killer()
    for name in ("get", "insert", "replace", "upsert", "upsert_many", "delete", "query"):
        _instrument(
            monkeypatch, found, TableStore, name, lambda table, *_, _n=name, **__: f"{_n} {table}"
        )
    _instrument(monkeypatch, found, QueueStore, "send", lambda queue, *_, **__: f"send {queue}")
    _instrument(
        monkeypatch,
        found,
        GraphClient,
        "request",
        lambda method, path, *_, **__: f"graph {method} {path.split('?')[0][-40:]}",
    )
    _instrument(
        monkeypatch,
        found,
        Platform,
        "deliver",
        lambda message, *_, **__: f"post {message['body']['type']}",
    )
    return found


def restart(world: World) -> Services:
    """Another worker process: new clients built from the settings, nothing of the old one's
    memory. The old one's threads are waited for (they die at their next call)."""
    old = world.svc
    if old is not None and "_pool" in old.__dict__:
        old._pool.shutdown(wait=True)
    world.svc = Services(load_settings(world.env, Path("/nonexistent")))
    return world.svc


# -- what the scenarios do ----------------------------------------------------------------------


@dataclass
class Expect:
    """What must hold once the world settled."""

    live: dict[str, tuple[str, int]] = field(default_factory=dict)  # booking → (mailbox, version)
    gone: set[str] = field(default_factory=set)
    conflicts: set[str] = field(default_factory=set)  # bookings that must get booking.conflict
    failed: set[str] = field(default_factory=set)  # bookings that must get booking.failed


def booking(booking_id: str, resource: str, version: int = 1, **changes: Any) -> dict[str, Any]:
    kind = changes.pop("kind", "booking.created" if version == 1 else "booking.updated")
    data = {
        "id": booking_id,
        "version": version,
        "resource_id": resource,
        "title": "Sprint review",
        "organizer": {"name": "Ada Lovelace", "email": "ada@contoso.example"},
        "start": f"{DAY}T09:00:00+00:00",
        "end": f"{DAY}T10:00:00+00:00",
        "time_zone": "UTC",
        **changes,
    }
    stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {"type": kind, "timestamp": stamp, "data": data}


def person(world: World, mailbox: str, hour: int, show_as: str = "busy", **extra: Any) -> str:
    event = world.tenant.control.create_event(
        mailbox,
        {
            "subject": f"Person {hour}",
            "start": {"dateTime": f"{DAY}T{hour:02d}:00:00", "timeZone": "UTC"},
            "end": {"dateTime": f"{DAY}T{hour:02d}:45:00", "timeZone": "UTC"},
            "showAs": show_as,
            **extra,
        },
    )
    return str(event["id"])


def send(world: World, event: dict[str, Any]) -> None:
    assert world.send_booking(event) == 202


def settle(world: World) -> None:
    world.drain()
    world.sweep()
    world.drain()


class Scenario:
    """``prepare`` once, then ``act(run)`` for the clean run and each kill point: it queues the
    one message under test and says what must hold after it. Every run leaves the world as the
    next one expects it, so each makes the same calls."""

    def prepare(self, world: World) -> None:
        pass

    def act(self, world: World, run: int) -> tuple[str, Expect]:
        raise NotImplementedError


class CreateWithConflict(Scenario):
    def prepare(self, world: World) -> None:
        person(world, ROOM_A, 9)  # someone booked the hour in Outlook: a blocker
        settle(world)

    def act(self, world: World, run: int) -> tuple[str, Expect]:
        booking_id = f"bk_new_{run}"
        send(world, booking(booking_id, "room-a"))
        return APPLY_BOOKING, Expect(live={booking_id: (ROOM_A, 1)}, conflicts={booking_id})


class Update(Scenario):
    def prepare(self, world: World) -> None:
        send(world, booking("bk_upd", "room-a", online_meeting=True))
        world.drain()

    def act(self, world: World, run: int) -> tuple[str, Expect]:
        end = f"{DAY}T{10 + run % 2}:00:00+00:00"
        send(world, booking("bk_upd", "room-a", run + 1, title=f"Retro {run}", end=end))
        return APPLY_BOOKING, Expect(live={"bk_upd": (ROOM_A, run + 1)})


class Unchanged(Scenario):
    """A new version that changes nothing the calendar shows."""

    def prepare(self, world: World) -> None:
        send(world, booking("bk_same", "room-a"))
        world.drain()

    def act(self, world: World, run: int) -> tuple[str, Expect]:
        send(world, booking("bk_same", "room-a", run + 1))
        return APPLY_BOOKING, Expect(live={"bk_same": (ROOM_A, run + 1)})


class Move(Scenario):
    def prepare(self, world: World) -> None:
        send(world, booking("bk_mov", "room-a"))
        world.drain()

    def act(self, world: World, run: int) -> tuple[str, Expect]:
        resource = ("room-a", "room-b")[run % 2]  # run 1 moves it to room-b, run 2 back
        send(world, booking("bk_mov", resource, run + 1))
        return APPLY_BOOKING, Expect(live={"bk_mov": (RESOURCES[resource], run + 1)})


class Cancel(Scenario):
    def act(self, world: World, run: int) -> tuple[str, Expect]:
        booking_id = f"bk_cxl_{run}"
        send(world, booking(booking_id, "room-a"))
        world.drain()
        send(world, booking(booking_id, "room-a", 2, status="cancelled", kind="booking.cancelled"))
        return APPLY_BOOKING, Expect(gone={booking_id})


class Denied(Scenario):
    """Graph refuses the mailbox for good: booking.failed."""

    def prepare(self, world: World) -> None:
        world.tenant.control.set_mailbox_state(ROOM_B, "access_denied")

    def act(self, world: World, run: int) -> tuple[str, Expect]:
        booking_id = f"bk_den_{run}"
        send(world, booking(booking_id, "room-b"))
        return APPLY_BOOKING, Expect(failed={booking_id})


class Repair(Scenario):
    """A person deleted the booking's event in Outlook: the repair creates it again."""

    def prepare(self, world: World) -> None:
        send(world, booking("bk_rep", "room-a"))
        world.drain()

    def act(self, world: World, run: int) -> tuple[str, Expect]:
        for event in world.tenant.control.events(ROOM_A):
            if booking_of(event) == "bk_rep":
                world.tenant.control.delete_event(ROOM_A, str(event["id"]))
        message = {"booking_id": "bk_rep", "attempt": 1, "repair": True}
        world.services.queues.send(APPLY_BOOKING, message)
        return APPLY_BOOKING, Expect(live={"bk_rep": (ROOM_A, 1)})


class DeltaRead(Scenario):
    """People create events (one private, one free), change one, free one and delete one; a
    booking's event sits in the same calendar."""

    def prepare(self, world: World) -> None:
        send(world, booking("bk_own", "room-a", start=f"{DAY}T08:00:00+00:00"))
        self.changed = person(world, ROOM_A, 10)
        self.created(world)
        settle(world)

    def created(self, world: World) -> None:
        self.busy = person(world, ROOM_A, 13)
        self.private = person(world, ROOM_A, 14, sensitivity="private")
        self.free = person(world, ROOM_A, 15, show_as="free")

    def act(self, world: World, run: int) -> tuple[str, Expect]:
        control = world.tenant.control
        control.update_event(ROOM_A, self.busy, {"showAs": "free"})
        control.delete_event(ROOM_A, self.private)
        control.delete_event(ROOM_A, self.free)
        show_as = ("oof", "busy")[run % 2]
        control.update_event(ROOM_A, self.changed, {"subject": f"Moved {run}", "showAs": show_as})
        self.created(world)
        world.services.queues.send(SYNC_MAILBOX, {"mailbox": ROOM_A})
        return SYNC_MAILBOX, Expect(live={"bk_own": (ROOM_A, 1)})


class FullRead(Scenario):
    """A full read of the window (a resync): a deletion shows only as absence."""

    def prepare(self, world: World) -> None:
        self.kept = person(world, ROOM_A, 10)
        self.new = person(world, ROOM_A, 13)
        settle(world)

    def act(self, world: World, run: int) -> tuple[str, Expect]:
        control = world.tenant.control
        control.delete_event(ROOM_A, self.new)
        control.update_event(ROOM_A, self.kept, {"subject": f"Renamed {run}"})
        self.new = person(world, ROOM_A, 13)
        world.services.queues.send(SYNC_MAILBOX, {"mailbox": ROOM_A, "full": True})
        return SYNC_MAILBOX, Expect()


SCENARIOS: dict[str, type[Scenario]] = {
    "create with a conflict": CreateWithConflict,
    "update": Update,
    "update that changes nothing shown": Unchanged,
    "move to the other room": Move,
    "cancel": Cancel,
    "permanent Graph error": Denied,
    "repair of a deleted event": Repair,
    "delta read": DeltaRead,
    "full read": FullRead,
}


# -- running one message with a death in it ------------------------------------------------------


def run_target(world: World, killer: Killer, queue_name: str, kill_at: int | None) -> str | None:
    """Take the one queued message and run its handler; the worker dies at call ``kill_at``
    (past the last call: after the handler returned). Then the message is visible again to
    another worker, as the queue makes it after a death. Returns where it died."""
    svc = restart(world)  # every run starts in a new process: the same calls each time
    queue = svc.queues.queue(queue_name)
    (message,) = queue.receive_messages(max_messages=1, visibility_timeout=120)
    payload = json.loads(decode_message(message.content))
    killer.arm(svc, kill_at)
    died = None
    try:
        world._handle(queue_name, payload, redelivered=False)
    except Crash as crash:
        died = str(crash)
    finally:
        killer.disarm()
    if died is None and kill_at is not None:
        died = "after the handler returned, before the message was deleted"
    if died is None:
        queue.delete_message(message)
        return None
    svc = restart(world)
    if queue_name == SYNC_MAILBOX:  # its lease ran out before the message was seen again
        mailbox = str(payload["mailbox"])
        svc.cursors.release(svc.cursors.get(mailbox))
    svc.queues.queue(queue_name).update_message(message, visibility_timeout=0)
    return died


def platform_blockers(world: World) -> dict[str, dict[str, Any]]:
    """The platform's blockers: per blocker id the delivery with the highest sequence wins."""
    newest: dict[str, dict[str, Any]] = {}
    for record in world.platform.received():
        if record["type"] not in ("blocker.upserted", "blocker.deleted"):
            continue
        data = record["data"]
        known = newest.get(data["id"])
        if known is None or known["data"]["sequence"] < data["sequence"]:
            newest[data["id"]] = record
    return {bid: r["data"] for bid, r in newest.items() if r["type"] == "blocker.upserted"}


def problems(world: World, expect: Expect) -> list[str]:
    svc, control = world.services, world.tenant.control
    found: list[str] = []
    events = {mailbox: control.events(mailbox) for mailbox in MAILBOXES}
    received = world.platform.received()
    for booking_id, (mailbox, version) in expect.live.items():
        where = {m: [e for e in es if booking_of(e) == booking_id] for m, es in events.items()}
        if [len(where[m]) for m in MAILBOXES] != [int(m == mailbox) for m in MAILBOXES]:
            found.append(f"{booking_id}: events { ({m: len(e) for m, e in where.items()}) }")
            continue
        event_id = str(where[mailbox][0]["id"])
        own = svc.links.projections(mailbox).get(event_id)
        if own is None or not own.digest:
            found.append(f"{booking_id}: its event is not indexed as ours ({own})")
        if not any(
            r["type"] == "booking.synced"
            and r["data"]["booking_id"] == booking_id
            and r["data"]["version"] == version
            and r["data"]["event_id"] == event_id
            for r in received
        ):
            found.append(f"{booking_id}: no booking.synced for version {version}")
    for booking_id in expect.gone:
        left = [m for m, es in events.items() for e in es if booking_of(e) == booking_id]
        if left:
            found.append(f"{booking_id}: cancelled, still in {left}")
    for kind, wanted in (("booking.conflict", expect.conflicts), ("booking.failed", expect.failed)):
        for booking_id in wanted:
            if not any(
                r["type"] == kind and r["data"]["booking_id"] == booking_id for r in received
            ):
                found.append(f"{booking_id}: no {kind}")
    blocking = {
        blocker_id(mailbox, str(e["id"])): e
        for mailbox, es in events.items()
        for e in es
        if booking_of(e) is None and str(e.get("showAs")).lower() in BLOCKING
    }
    held = platform_blockers(world)
    for bid in sorted(set(blocking) | set(held)):
        if bid not in held:
            found.append(f"blocker lost: {blocking[bid].get('subject')!r}")
        elif bid not in blocking:
            found.append(f"blocker {held[bid].get('title')!r} stands for no blocking event")
        elif held[bid]["show_as"] != blocking[bid]["showAs"]:
            found.append(f"blocker {bid}: show_as {held[bid]['show_as']}, Outlook says "
                         f"{blocking[bid]['showAs']}")  # fmt: skip
    return found


@pytest.mark.timeout(300)
def test_a_worker_killed_at_any_step_loses_no_outcome_and_no_blocker(
    quiet_world: World, killer: Killer
) -> None:
    world = quiet_world
    started = time.monotonic()
    report: list[str] = []
    failures: list[str] = []
    for name, kind in SCENARIOS.items():
        world.fresh()
        scenario = kind()
        scenario.prepare(world)
        queue_name, expect = scenario.act(world, 1)
        run_target(world, killer, queue_name, None)
        clean = list(killer.calls)
        world.drain()
        assert not problems(world, expect), f"{name}, no crash: {problems(world, expect)}"
        report.append(f"{name}: {len(clean)} calls: {', '.join(clean)}")
        for kill_at in range(1, len(clean) + 2):
            queue_name, expect = scenario.act(world, kill_at + 1)
            died = run_target(world, killer, queue_name, kill_at)
            world.drain()  # the redelivery, and whatever it queues
            failures += [
                f"{name}, killed at {kill_at} ({died}): {p}" for p in problems(world, expect)
            ]
    elapsed = time.monotonic() - started
    print("\n".join(report) + f"\n{elapsed:.1f} s")
    assert not failures, "\n".join(failures)
