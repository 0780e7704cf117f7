"""Scale-out: how the app behaves when several processes compete for its queue work, as the
instances of a scaled-out function app do in Azure.

For each process count a fresh stack starts (Azurite behind a counting proxy, bench/
storage_meter.py, so storage requests are counted where they leave the processes; the simulated
tenant; the simulated platform; the local function host as ``DEVHOST_INSTANCES`` whole instances
on one port, or with ``--workers``, one instance with ``FUNCTIONS_WORKER_PROCESS_COUNT`` processes).
Twenty room mailboxes are mapped as room-0 ... room-19, and every Graph request on an events path
is held 200 ms by a tenant fault (so work overlaps, as with a real Graph). Then:

(a) 200 bookings into ONE room, sent as fast as 32 threads can: until all are synced, the
    calendar holds exactly one event per booking (duplicates counted), 429 answers from the
    tenant, seconds from the first send to the last ``booking.synced``;
(b) the same with the 200 bookings spread over the 20 rooms;
(c) storage requests per change: 30 creates one at a time (each waited for until synced),
    then 30 updates of them (new title and time), into one room; table requests, queue work
    and queue polls (empty receives) per change, and per table and queue name.

A few warm-up bookings (not measured) first let every process sign in and open its clients.
Every instance serves HTTP, polls the queues and may run timers; with ``--workers`` the extra
processes take queue work only (HTTP and timers stay in the first, as in the Functions host).

Printed per process count: each burst's answers, seconds, landed/duplicated/missing events, 429s,
Graph requests, booking.failed, storage requests per booking and how long the intake took to
answer; idle queue polls per second; per create and per update: table requests, queue work
(everything but empty receives), queue polls (empty receives), Graph requests, and per table and
queue name by operation, plus storage answers of 300 and above (404 look-ups, 409 and 412 write
races). A summary table ends the run. Storage requests of the instances' timer leases (table
devhostlocks) are shown as background. The machine is shared: compare within one run.

    .venv/bin/python bench/scale_out.py [--processes 1 3 6] [--bookings 200] [--changes 30]
    .venv/bin/python bench/scale_out.py --workers [--processes 1 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _stack import KEY, ROOT, percentile
from storage_meter import Key, StorageMeter, summarize

from devhost import stack
from devhost.azurite import Azurite, connection_string
from sync_core.domain.booking import BOOKING_PROPERTY_ID

ROOMS = 20
SENDERS = 32
DELAY = 0.2  # seconds every Graph request on an events path is held
# Written by the host on its own, not for any change: the instances' timer leases.
BACKGROUND = frozenset({"devhostlocks"})


def say(text: str) -> None:
    print(text, flush=True)


# -- the stack with the meter in front of Azurite ---------------------------------------------


class MeteredAzurite(Azurite):
    """Azurite, and the meter in front of it: ``connection_string`` is the meter's."""

    meter: StorageMeter | None = None

    def start(self, timeout: float = 30.0) -> MeteredAzurite:
        super().start(timeout)
        if self.meter is None:  # a restart keeps the meter (Azurite's ports do not change)
            try:
                self.meter = StorageMeter(connection_string(*self.ports)).start()
            except BaseException:
                self.stop()  # not left running: the stack never got to hold it
                raise
        return self

    @property
    def connection_string(self) -> str:
        assert self.meter is not None
        return self.meter.connection_string


class MeteredStack(stack.Stack):
    """devhost's Stack, its Azurite behind the meter: the host's AzureWebJobsStorage is the
    meter's connection string. (Stack.start builds its Azurite from ``devhost.stack.Azurite``
    and gives the host ``azurite.connection_string``; that name is swapped while it starts.)"""

    meter: StorageMeter
    rooms: list[str]  # room-K is mapped to rooms[K]

    def start(self) -> MeteredStack:
        original = stack.Azurite  # type: ignore[attr-defined]
        stack.Azurite = MeteredAzurite  # type: ignore[attr-defined]
        try:
            super().start()
        except BaseException:
            self.stop()
            raise
        finally:
            stack.Azurite = original  # type: ignore[attr-defined]
        assert isinstance(self.azurite, MeteredAzurite) and self.azurite.meter is not None
        self.meter = self.azurite.meter
        return self

    def stop(self) -> None:
        for part in ("host", "platform", "tenant", "azurite"):
            if hasattr(self, part):
                try:
                    getattr(self, part).stop()
                except Exception as exc:  # stop the rest anyway
                    say(f"  (stopping the {part} failed: {exc!r})")
        meter = getattr(getattr(self, "azurite", None), "meter", None)
        if meter is not None:
            meter.stop()


# -- bookings ---------------------------------------------------------------------------------


def booking_of(raw: dict[str, Any]) -> str | None:
    for prop in raw.get("singleValueExtendedProperties") or []:
        if str(prop.get("id", "")).lower() == BOOKING_PROPERTY_ID.lower():
            return str(prop.get("value"))
    return None


def stamp(text: str) -> float:
    """The platform's received_at (UTC, microseconds, Z) as epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def send_all(
    platform: Any, events: list[dict[str, Any]]
) -> tuple[float, Counter[int | str], list[float]]:
    """Send every event at once from SENDERS threads; (epoch of the first send, answers: the
    status, or the exception's name when there was none, e.g. ReadTimeout after the platform's
    10 s, seconds each send took)."""
    answers: Counter[int | str] = Counter()
    took: list[float] = []
    lock = threading.Lock()

    def send(event: dict[str, Any]) -> None:
        status: int | str
        started = time.monotonic()
        try:
            status = platform.send_booking(event).status_code
        except Exception as exc:
            status = type(exc).__name__
        with lock:
            answers[status] += 1
            took.append(time.monotonic() - started)

    first = time.time()
    with ThreadPoolExecutor(max_workers=SENDERS) as pool:
        list(pool.map(send, events))
    return first, answers, took


def wait_synced(
    platform: Any, wanted: set[tuple[str, int]], timeout: float
) -> dict[tuple[str, int], float]:
    """(booking, version) → when its first booking.synced arrived, once all did or at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        seen: dict[tuple[str, int], float] = {}
        for record in platform.received("booking.synced"):
            data = record.get("data") or {}
            key = (str(data.get("booking_id")), int(data.get("version") or 0))
            if key in wanted:
                arrived = stamp(record["received_at"])
                seen[key] = min(arrived, seen.get(key, arrived))
        if len(seen) >= len(wanted) or time.monotonic() > deadline:
            return seen
        time.sleep(0.02 if len(wanted) == 1 else 0.1)


@dataclass
class Burst:
    label: str
    sent: int
    answers: Counter[int | str]
    intake: list[float]  # seconds each send took until answered (or timed out)
    synced: int
    seconds: float | None
    landed: int
    duplicated: int  # bookings with more than one event
    extra_events: int
    missing: int  # bookings with no event
    throttled: int
    graph_requests: int
    failed: int
    synced_twice: int  # bookings with more than one booking.synced record
    storage: dict[str, int]
    errors: dict[tuple[str, str, str, int], int]
    timed_out: bool


def burst(st: MeteredStack, label: str, rooms: list[int], count: int, timeout: float) -> Burst:
    control, platform = st.tenant.control, st.platform
    events = [
        platform.booking_event(resource_id=f"room-{rooms[i % len(rooms)]}") for i in range(count)
    ]
    ids = {e["data"]["id"] for e in events}
    wanted = {(b, 1) for b in ids}
    control.clear_requests()
    st.meter.reset()
    first, answers, took = send_all(platform, events)
    seen = wait_synced(platform, wanted, timeout)
    timed_out = len(seen) < len(wanted)
    storage = summarize(st.meter.counts())
    errors = st.meter.statuses()
    requests = control.requests(kind="graph")
    throttled = sum(1 for r in requests if r.get("status") == 429 or r.get("throttled"))
    per_booking: Counter[str] = Counter()
    for room in sorted(set(rooms)):
        for raw in control.events(st.rooms[room]):
            b = booking_of(raw)
            if b is not None and b in ids:
                per_booking[b] += 1
    records = [r for r in platform.received() if (r.get("data") or {}).get("booking_id") in ids]
    synced_per: Counter[str] = Counter(
        r["data"]["booking_id"] for r in records if r["type"] == "booking.synced"
    )
    return Burst(
        label=label,
        sent=count,
        answers=answers,
        intake=sorted(took),
        synced=len(seen),
        seconds=(max(seen.values()) - first) if seen else None,
        landed=sum(1 for b in ids if per_booking[b] == 1),
        duplicated=sum(1 for b in ids if per_booking[b] > 1),
        extra_events=sum(n - 1 for n in per_booking.values() if n > 1),
        missing=sum(1 for b in ids if per_booking[b] == 0),
        throttled=throttled,
        graph_requests=len(requests),
        failed=sum(1 for r in records if r["type"] == "booking.failed"),
        synced_twice=sum(1 for n in synced_per.values() if n > 1),
        storage=storage,
        errors=errors,
        timed_out=timed_out,
    )


@dataclass
class PerChange:
    label: str
    changes: int
    done: int
    seconds: float  # from the first send until storage was quiet again
    counts: dict[Key, int]
    errors: dict[tuple[str, str, str, int], int]
    graph_requests: int
    stuck: str | None = None
    latencies: list[float] = field(default_factory=list)


def one_by_one(
    st: MeteredStack, label: str, events: list[dict[str, Any]], quiet: float
) -> PerChange:
    """Send the events one at a time, each after the previous one's booking.synced; count
    storage from the first send until only polls are left."""
    control, platform = st.tenant.control, st.platform
    st.meter.wait_idle(quiet, timeout=60, ignore=BACKGROUND)
    control.clear_requests()
    st.meter.reset()
    started = time.monotonic()
    done, stuck, latencies = 0, None, []
    for event in events:
        key = (event["data"]["id"], int(event["data"]["version"]))
        sent = time.time()
        answer = platform.send_booking(event)
        if answer.status_code != 202:
            stuck = f"change {done + 1} answered {answer.status_code}"
            break
        seen = wait_synced(platform, {key}, 30)
        if not seen:
            stuck = f"change {done + 1} not synced within 30 s"
            break
        latencies.append(seen[key] - sent)
        done += 1
    st.meter.wait_idle(quiet, timeout=60, ignore=BACKGROUND)
    seconds = time.monotonic() - started - quiet
    return PerChange(
        label=label,
        changes=len(events),
        done=done,
        seconds=seconds,
        counts=st.meter.counts(),
        errors=st.meter.statuses(),
        graph_requests=len(control.requests(kind="graph")),
        stuck=stuck,
        latencies=latencies,
    )


# -- one process count ------------------------------------------------------------------------


@dataclass
class Run:
    processes: int
    mode: str
    startup: float
    bursts: list[Burst]
    changes: list[PerChange]
    idle_polls_per_second: float
    failures: int  # invocations that failed (host log)
    log: Path | None


def room_addresses(control: Any) -> list[str]:
    rooms = [m["address"] for m in control.mailboxes() if m.get("kind") == "room"]
    for i in range(len(rooms), ROOMS):
        address = f"bench.room{i:02d}@contoso.example"
        control.add_mailbox(address, f"Bench room {i}", kind="room")
        rooms.append(address)
    return rooms[:ROOMS]


def run_one(processes: int, args: argparse.Namespace) -> Run:
    mode = "worker processes" if args.workers else "instances"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    say(f"\n== {processes} {mode} == (load average {load})")
    t0 = time.monotonic()
    options: dict[str, Any] = {} if args.workers else {"instances": processes}
    st = MeteredStack(
        "bench-scale-out", processes if args.workers else 1, function_key=KEY, **options
    )
    st.start()
    try:
        st.host.wait_healthy(60)
        # The host reaches storage through the meter: its queue pollers show up at once.
        if not wait_for(lambda: summarize(st.meter.counts())["queue-poll"] > 0, 15):
            raise RuntimeError("no queue polls through the storage meter: the host bypasses it")
        up = time.monotonic() - t0
        control = st.tenant.control
        st.rooms = room_addresses(control)
        with ThreadPoolExecutor(max_workers=5) as pool:
            list(pool.map(lambda i: st.map(f"room-{i}", st.rooms[i]), range(ROOMS)))
        st.meter.wait_idle(args.quiet, timeout=90, ignore=BACKGROUND)
        mapped = time.monotonic() - t0
        control.add_fault(r".*/events.*", action="delay", delay=DELAY, probability=1.0)
        warm = [
            st.platform.booking_event(resource_id=f"room-{i % ROOMS}") for i in range(4 * processes)
        ]
        send_all(st.platform, warm)
        wait_synced(st.platform, {(e["data"]["id"], 1) for e in warm}, 60)
        st.meter.wait_idle(args.quiet, timeout=60, ignore=BACKGROUND)
        startup = time.monotonic() - t0
        say(
            f"  ready in {startup:.1f} s: stack up {up:.1f} s, {ROOMS} rooms mapped and synced "
            f"+{mapped - up:.1f} s, {len(warm)} warm-up bookings +{startup - mapped:.1f} s"
        )

        bursts = []
        for label, rooms in (("one room", [0]), (f"{ROOMS} rooms", list(range(ROOMS)))):
            result = burst(st, label, rooms, args.bookings, args.timeout)
            say(
                f"  ({'a' if len(rooms) == 1 else 'b'}) {args.bookings} bookings into {label}: "
                f"{result.synced} synced in "
                + (f"{result.seconds:.1f} s" if result.seconds is not None else "-")
                + f"{' (TIMED OUT)' if result.timed_out else ''}; {result.landed} landed, "
                f"{result.duplicated} duplicated, {result.throttled} throttled"
            )
            bursts.append(result)
            st.meter.wait_idle(args.quiet, timeout=60, ignore=BACKGROUND)

        # Idle: polls only.
        st.meter.reset()
        time.sleep(3.0)
        idle = summarize(st.meter.counts())["queue-poll"] / 3.0

        platform = st.platform
        creates = [platform.booking_event(resource_id="room-1") for _ in range(args.changes)]
        created = one_by_one(st, "create", creates, args.quiet)
        say(f"  (c) {created.done}/{args.changes} creates one by one in {created.seconds:.1f} s")
        updates = [
            platform.booking_event(
                resource_id="room-1",
                id=e["data"]["id"],
                version=2,
                title="Moved on",
                start=e["data"]["start"].replace("T09:00", "T11:00"),
                end=e["data"]["end"].replace("T10:30", "T12:00"),
            )
            for e in creates[: created.done]
        ]
        updated = one_by_one(st, "update", updates, args.quiet)
        say(f"      {updated.done}/{len(updates)} updates one by one in {updated.seconds:.1f} s")
        log = st.host.output()
        failures = sum(
            1 for line in log.splitlines() if "outcome=failed" in line and "function=" in line
        )
        return Run(processes, mode, startup, bursts, [created, updated], idle, failures, st.log)
    finally:
        st.stop()


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


# -- the report -------------------------------------------------------------------------------


def per_name(counts: dict[Key, int]) -> dict[tuple[str, str], dict[str, int]]:
    """(service, name) → op → requests (queue polls as op receive-empty)."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for key, n in counts.items():
        ops = out.setdefault((key.service, key.name), {})
        ops[key.op] = ops.get(key.op, 0) + n
    return out


def report(run: Run, changes: int) -> None:
    say(f"\n-- {run.processes} {run.mode}: results --")
    say(
        f"  {'burst':<10} {'sent':>5} {'202':>5} {'synced':>6} {'seconds':>8} {'landed':>6} "
        f"{'dup':>4} {'missing':>7} {'429':>5} {'graph':>6} {'failed':>6} "
        f"{'tbl/bk':>7} {'q-work/bk':>9} {'q-poll/bk':>9} {'intake p50/p95/max s':>20}"
    )
    for b in run.bursts:
        seconds = f"{b.seconds:.1f}" if b.seconds is not None else "-"
        if b.timed_out:
            seconds += "!"
        intake = "/".join(
            f"{q:.2f}" for q in (percentile(b.intake, 50), percentile(b.intake, 95), b.intake[-1])
        )
        say(
            f"  {b.label:<10} {b.sent:>5} {b.answers.get(202, 0):>5} {b.synced:>6} {seconds:>8} "
            f"{b.landed:>6} {b.duplicated:>4} {b.missing:>7} {b.throttled:>5} "
            f"{b.graph_requests:>6} {b.failed:>6} "
            f"{b.storage['table'] / b.sent:>7.1f} {b.storage['queue-work'] / b.sent:>9.1f} "
            f"{b.storage['queue-poll'] / b.sent:>9.1f} {intake:>20}"
        )
        other = {k: v for k, v in b.answers.items() if k != 202}
        if other or b.extra_events or b.synced_twice:
            say(
                f"  {'':<10} answers other than 202: {other or 'none'}; extra events "
                f"{b.extra_events}; bookings with more than one booking.synced {b.synced_twice}"
            )
        if b.errors:
            say(f"  {'':<10} storage answers >= 300: {fmt_errors(b.errors)}")
    say(f"  idle queue polls: {run.idle_polls_per_second:.1f}/s")
    for c in run.changes:
        totals = summarize({k: v for k, v in c.counts.items() if k.name not in BACKGROUND})
        background = sum(n for k, n in c.counts.items() if k.name in BACKGROUND)
        n = max(c.done, 1)
        latency = sorted(c.latencies)
        median = f"{latency[len(latency) // 2] * 1000:.0f} ms" if latency else "-"
        say(
            f"  per {c.label} ({c.done}/{c.changes} one by one, {c.seconds:.1f} s, "
            f"median send → synced {median}" + (f"; STUCK: {c.stuck}" if c.stuck else "") + "):"
        )
        say(
            f"    table {totals['table'] / n:.1f}   queue work {totals['queue-work'] / n:.1f}   "
            f"queue polls {totals['queue-poll'] / n:.1f}   Graph {c.graph_requests / n:.1f}"
            + (f"   (background {background / n:.1f})" if background else "")
        )
        for (service, name), ops in sorted(
            per_name(c.counts).items(), key=lambda item: -sum(item[1].values())
        ):
            total = sum(ops.values())
            detail = ", ".join(f"{op} {v / n:.2f}" for op, v in sorted(ops.items()))
            say(f"      {service:<5} {name:<16} {total / n:6.2f}  ({detail})")
        if c.errors:
            say(f"    storage answers >= 300: {fmt_errors(c.errors)}")
    if run.failures:
        say(f"  failed invocations in the host log: {run.failures} ({run.log})")


def fmt_errors(errors: dict[tuple[str, str, str, int], int]) -> str:
    return ", ".join(
        f"{name} {op} {status}: {n}"
        for (service, name, op, status), n in sorted(errors.items(), key=lambda i: -i[1])
    )


def summary(runs: list[Run]) -> None:
    say("\n== summary == (no202: sends not answered 202, e.g. timed out at 10 s)")
    say(
        f"  {'processes':>9} {'(a) s':>7} {'dup':>4} {'429':>4} {'no202':>5} {'(b) s':>7} "
        f"{'dup':>4} {'429':>4} {'no202':>5} {'tbl/create':>10} {'qwork/create':>12} "
        f"{'tbl/update':>10} {'qwork/update':>12} {'polls/s idle':>12}"
    )
    for r in runs:
        a, b = r.bursts
        cells = []
        for c in r.changes:
            t = summarize({k: v for k, v in c.counts.items() if k.name not in BACKGROUND})
            n = max(c.done, 1)
            cells += [t["table"] / n, t["queue-work"] / n]

        def secs(x: Burst) -> str:
            return (f"{x.seconds:.1f}" if x.seconds is not None else "-") + (
                "!" if x.timed_out else ""
            )

        def no202(x: Burst) -> int:
            return x.sent - x.answers.get(202, 0)

        say(
            f"  {r.processes:>9} {secs(a):>7} {a.duplicated:>4} {a.throttled:>4} {no202(a):>5} "
            f"{secs(b):>7} {b.duplicated:>4} {b.throttled:>4} {no202(b):>5} "
            f"{cells[0]:>10.1f} {cells[1]:>12.1f} {cells[2]:>10.1f} {cells[3]:>12.1f} "
            f"{r.idle_polls_per_second:>12.1f}"
        )


def tree_state() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "sync_core", "devhost", "function_app.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.splitlines()
    except OSError:
        return "unknown"
    return f"{head}" + (f" + {len(dirty)} changed file(s) in sync_core/devhost" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 3, 6])
    parser.add_argument("--bookings", type=int, default=200)
    parser.add_argument("--changes", type=int, default=30, help="creates and updates in (c)")
    parser.add_argument(
        "--workers",
        action="store_true",
        help="scale with FUNCTIONS_WORKER_PROCESS_COUNT (queue-only processes) instead of "
        "DEVHOST_INSTANCES (whole instances on one port)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="per burst, seconds")
    parser.add_argument(
        "--quiet", type=float, default=1.5, help="seconds without storage work that mean idle"
    )
    args = parser.parse_args()
    say(
        f"scale-out bench: {os.cpu_count()} cores, code {tree_state()}; Graph events paths held "
        f"{DELAY * 1000:.0f} ms; {args.bookings} bookings per burst, {args.changes} changes"
    )
    started = time.monotonic()
    runs = []
    for processes in args.processes:
        runs.append(run_one(processes, args))
        report(runs[-1], args.changes)
        say(f"  (elapsed {time.monotonic() - started:.0f} s)")
    summary(runs)


if __name__ == "__main__":
    main()
