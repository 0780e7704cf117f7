"""Outlook into the platform: latency from a change in Outlook to the blocker at the platform,
and the notification endpoint's answer time under a steady stream of notifications.

Starts a fresh Azurite, the simulated tenant (own process), the simulated platform and the local
function host; maps one room; then
1. creates events in the room as a person would, one every ``--interval`` seconds, and measures
   the time from the tenant's change to the signed ``blocker.upserted`` arriving at the platform;
2. posts valid change notifications at 200/s for a few seconds and measures each answer time.

    .venv/bin/python bench/inbound.py [--events 30] [--interval 1.0] [--rate 200] [--seconds 5]

With ``--rooms N`` it measures under load instead: maps N rooms (the seeded ones, plus
``bench.roomK@contoso.example`` rooms added to the tenant when it has fewer), then creates
``--rate`` events a second in total (default 20), round-robin over the rooms, for ``--duration``
seconds (default 30), and prints p50/p95/p99 of the time from the tenant's change (the event's
lastModifiedDateTime) to the first signed ``blocker.upserted`` for that event at the platform,
and the calendarView/delta requests the product made meanwhile (from the tenant's request log):
pages (every request) and rounds (requests without ``$skiptoken``), per change.

    .venv/bin/python bench/inbound.py --rooms 10 [--rate 20] [--duration 30] [--drain 60]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import requests
from _stack import ROOM, Stack, percentile, wait_until

from sandbox.client import SandboxControl
from sync_core.config import load_settings
from sync_core.services import Services


def parse(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=30)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="notifications a second (default 200); with --rooms: Outlook changes a second "
        "in total (default 20)",
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rooms", type=int, default=None, help="measure under load over N rooms")
    parser.add_argument("--duration", type=float, default=30.0, help="with --rooms: seconds")
    parser.add_argument(
        "--drain", type=float, default=60.0, help="with --rooms: seconds to wait for blockers"
    )
    args = parser.parse_args()
    if args.rooms is not None:
        if args.rooms < 1:
            parser.error("--rooms must be at least 1")
        args.rate = 20.0 if args.rate is None else args.rate
        under_load(args)
        return
    args.rate = 200.0 if args.rate is None else args.rate

    stack = Stack("inbound").start()
    print(f"function host log: {stack.log}")
    try:
        stack.map("room-42", ROOM)
        time.sleep(2.0)  # the first full read of the new mapping
        stack.platform.clear()

        changed_at: dict[str, float] = {}
        day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        for i in range(args.events):
            start = day + timedelta(days=1 + i // 8, hours=8 + i % 8)
            event = stack.tenant.control.create_event(
                ROOM,
                {
                    "subject": f"Meeting {i}",
                    "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
                    "end": {
                        "dateTime": (start + timedelta(minutes=45)).strftime("%Y-%m-%dT%H:%M:%S"),
                        "timeZone": "UTC",
                    },
                },
            )
            changed_at[event["id"]] = time.time()
            time.sleep(args.interval)

        def arrived() -> dict[str, float]:
            return {
                r["data"]["source"]["event_id"]: parse(r["received_at"])
                for r in stack.platform.received("blocker.upserted")
            }

        wait_until(lambda: len(arrived()) >= len(changed_at), 60)
        got = arrived()
        latencies = [(got[e] - t) * 1000 for e, t in changed_at.items() if e in got]
        # When the simulated tenant posted the notification for each event.
        notified: dict[str, float] = {}
        for delivery in stack.tenant.control.deliveries():
            sent = parse(str(delivery["time"])) - float(delivery.get("durationMs") or 0) / 1000
            for item in delivery.get("items") or []:
                event_id = str((item.get("resourceData") or {}).get("id") or "")
                if event_id in changed_at and event_id not in notified:
                    notified[event_id] = sent
        after_notification = [(got[e] - t) * 1000 for e, t in notified.items() if e in got]
        print(
            f"Outlook change → blocker at the platform ({len(latencies)}/{len(changed_at)}, "
            f"one change every {args.interval:g} s): "
            f"p50 {percentile(latencies, 50):6.1f} ms  p95 {percentile(latencies, 95):6.1f} ms  "
            f"p99 {percentile(latencies, 99):6.1f} ms"
        )
        if after_notification:
            print(
                f"notification sent → blocker at the platform ({len(after_notification)}): "
                f"p50 {percentile(after_notification, 50):6.1f} ms  "
                f"p95 {percentile(after_notification, 95):6.1f} ms  "
                f"p99 {percentile(after_notification, 99):6.1f} ms"
            )

        svc = Services(load_settings(stack.env, Path("/nonexistent")))
        record = svc.subscriptions.by_mailbox(ROOM)
        assert record is not None, "no subscription was created"
        item = {
            "subscriptionId": record.subscription_id,
            "clientState": record.client_state,
            "changeType": "updated",
            "resource": f"Users/{ROOM}/Events/AAMkBench",
            "tenantId": stack.tenant.env()["TENANT_ID"],
        }
        count = int(args.rate * args.seconds)
        answers: list[float] = []
        statuses: list[int] = []
        lock = threading.Lock()
        local = threading.local()
        begin = time.monotonic() + 0.2

        def post(index: int) -> None:
            session = getattr(local, "session", None)
            if session is None:
                session = local.session = requests.Session()
            delay = begin + index / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent = time.perf_counter()
            answer = session.post(
                f"{stack.base}/api/graph/notifications", json={"value": [item]}, timeout=10
            )
            took = (time.perf_counter() - sent) * 1000
            with lock:
                answers.append(took)
                statuses.append(answer.status_code)

        with ThreadPoolExecutor(max_workers=32) as pool:
            list(pool.map(post, range(count)))
        elapsed = time.monotonic() - begin
        print(
            f"notification answers at {args.rate:.0f}/s ({count} in {elapsed:.1f} s, "
            f"{statuses.count(202)} answered 202): p50 {percentile(answers, 50):5.1f} ms  "
            f"p99 {percentile(answers, 99):5.1f} ms  max {max(answers):5.1f} ms"
        )
        reads = sum(
            1
            for r in stack.tenant.control.requests(mailbox=ROOM)
            if "calendarView/delta" in r["path"] and r["method"] == "GET"
        )
        print(f"  delta reads of the mailbox during the whole run: {reads}")
    finally:
        stack.stop()


# -- under load (--rooms) ------------------------------------------------------------------------

DELTA = "calendarView/delta"


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def bench_rooms(control: SandboxControl, count: int) -> list[str]:
    """``count`` room addresses: the tenant's rooms (ROOM first), plus new ones if too few."""
    rooms = [m["address"].lower() for m in control.mailboxes() if m.get("kind") == "room"]
    rooms.sort(key=lambda address: address != ROOM)
    k = 1
    while len(rooms) < count:
        address = f"bench.room{k}@contoso.example"
        if address not in rooms:
            control.add_mailbox(address, f"Bench Room {k}", kind="room")
            rooms.append(address)
        k += 1
    return rooms[:count]


def delta_reads(control: SandboxControl, since: int) -> list[dict[str, Any]]:
    """The product's calendarView/delta requests after request-log entry ``since``."""
    return [
        r
        for r in control.requests(kind="graph", since=since)
        if DELTA in r["path"] and r["method"] == "GET"
    ]


def is_page(entry: dict[str, Any]) -> bool:
    """A follow-up page of a round (``$skiptoken``); the first request of a round has none."""
    query = parse_qs(urlsplit(entry["path"]).query)
    return "$skiptoken" in query


def first_blockers(platform: Any) -> tuple[dict[str, float], Counter[str], dict[str, str]]:
    """Event id → when its first ``blocker.upserted`` arrived; upserts per event; resource."""
    first: dict[str, float] = {}
    upserts: Counter[str] = Counter()
    resource: dict[str, str] = {}
    for r in platform.received("blocker.upserted"):
        data = r.get("data") or {}
        event_id = str((data.get("source") or {}).get("event_id") or "")
        at = parse(r["received_at"])
        upserts[event_id] += 1
        if event_id not in first or at < first[event_id]:
            first[event_id] = at
            resource[event_id] = str(data.get("resource_id") or "")
    return first, upserts, resource


def quantiles(values: list[float]) -> str:
    if not values:
        return "no values"
    return (
        f"p50 {percentile(values, 50):7.1f} ms  p95 {percentile(values, 95):7.1f} ms  "
        f"p99 {percentile(values, 99):7.1f} ms  max {max(values):7.1f} ms"
    )


def wait_for_initial_reads(stack: Any, rooms: list[str], timeout: float) -> bool:
    """Until every room's first full read is stored (a delta link, no lease held)."""
    svc = Services(load_settings(stack.env, Path("/nonexistent")))

    def done() -> bool:
        moment = datetime.now(UTC)
        for mailbox in rooms:
            cursor = svc.cursors.get(mailbox)
            if cursor.delta_link is None:
                return False
            if cursor.lease_owner and cursor.lease_until and cursor.lease_until > moment:
                return False
        return True

    return wait_until(done, timeout)


def under_load(args: argparse.Namespace) -> None:
    print(f"start: {load_text()}", flush=True)
    stack = Stack("inbound-load").start()
    print(f"function host log: {stack.log}", flush=True)
    control = stack.tenant.control
    try:
        rooms = bench_rooms(control, args.rooms)
        resource_of = {mailbox: f"room-{i + 1}" for i, mailbox in enumerate(rooms)}
        for mailbox, resource_id in resource_of.items():
            stack.map(resource_id, mailbox)
        print(f"mapped {len(rooms)} rooms: {', '.join(rooms)}", flush=True)
        if not wait_for_initial_reads(stack, rooms, 60):
            print("WARNING: not every room's first read finished within 60 s", flush=True)
        time.sleep(1.0)
        stack.platform.clear()
        request_base = max((r["seq"] for r in control.requests()), default=0)
        delivery_base = max((d["seq"] for d in control.deliveries()), default=0)

        count = int(args.rate * args.duration)
        print(
            f"creating {count} events: {args.rate:g}/s over {len(rooms)} rooms "
            f"(round-robin) for {args.duration:g} s; {load_text()}",
            flush=True,
        )
        changes: dict[str, dict[str, Any]] = {}  # event id → room, changed_at, lag
        errors: list[str] = []
        lock = threading.Lock()
        local = threading.local()
        day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        begin = time.monotonic() + 0.5
        wall_begin = time.time() + 0.5
        stop_progress = threading.Event()
        phase = ["load"]

        def create(index: int) -> None:
            client = getattr(local, "client", None)
            if client is None:
                client = local.client = SandboxControl(stack.tenant.url, stack.tenant.ca_file)
            mailbox = rooms[index % len(rooms)]
            j = index // len(rooms)  # this room's j-th event
            start = day + timedelta(days=1 + j // 8, hours=8 + j % 8)
            due = begin + index / args.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            lag = time.monotonic() - due
            try:
                event = client.create_event(
                    mailbox,
                    {
                        "subject": f"Load {index}",
                        "start": {
                            "dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"),
                            "timeZone": "UTC",
                        },
                        "end": {
                            "dateTime": (start + timedelta(minutes=45)).strftime(
                                "%Y-%m-%dT%H:%M:%S"
                            ),
                            "timeZone": "UTC",
                        },
                    },
                )
            except Exception as error:
                with lock:
                    errors.append(f"{type(error).__name__}: {error}")
                return
            stamp = event.get("lastModifiedDateTime") or event.get("createdDateTime")
            changed_at = parse(stamp) if stamp else time.time()
            with lock:
                changes[event["id"]] = {"room": mailbox, "changed_at": changed_at, "lag": lag}

        queues = Services(load_settings(stack.env, Path("/nonexistent"))).queues
        peak_depth = [0]

        def depths() -> str:
            try:
                sync, deliver = queues.depth("sync-mailbox"), queues.depth("deliver")
            except Exception as error:
                return f"queue depth unknown ({type(error).__name__})"
            peak_depth[0] = max(peak_depth[0], sync)
            return f"queued: sync-mailbox {sync}, deliver {deliver}"

        def progress() -> None:
            while not stop_progress.wait(5.0):
                got, _, _ = first_blockers(stack.platform)
                with lock:
                    ids = list(changes)
                arrived = sum(1 for e in ids if e in got)
                reads = delta_reads(control, request_base)
                rounds = sum(1 for r in reads if not is_page(r))
                print(
                    f"  [{phase[0]} {time.monotonic() - begin:5.1f} s] changes {len(ids)}/"
                    f"{count}, blockers {arrived}, delta rounds {rounds}, pages {len(reads)}; "
                    f"{depths()}; {load_text()}",
                    flush=True,
                )

        reporter = threading.Thread(target=progress, daemon=True)
        reporter.start()
        try:
            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(create, range(count)))
            load_end = time.monotonic()
            phase[0] = "drain"
            all_arrived = wait_until(
                lambda: all(e in first_blockers(stack.platform)[0] for e in list(changes)),
                args.drain,
            )
            drained = time.monotonic()
            at_last_blocker = delta_reads(control, request_base)
            time.sleep(3.0)  # the reads a burst still owes after its last blocker
        finally:
            stop_progress.set()
            reporter.join()
        reads = delta_reads(control, request_base)
        print(f"end: {load_text()}", flush=True)

        got, upserts, resource = first_blockers(stack.platform)
        latencies = [(got[e] - c["changed_at"]) * 1000 for e, c in changes.items() if e in got]
        missing = [e for e in changes if e not in got]
        wrong_room = [
            e for e in changes if e in got and resource[e] != resource_of[changes[e]["room"]]
        ]
        lags = [c["lag"] * 1000 for c in changes.values()]
        notified: dict[str, float] = {}
        deliveries = control.deliveries(since=delivery_base)
        for delivery in deliveries:
            sent = parse(str(delivery["time"])) - float(delivery.get("durationMs") or 0) / 1000
            for item in delivery.get("items") or []:
                event_id = str((item.get("resourceData") or {}).get("id") or "")
                if event_id in changes and event_id not in notified:
                    notified[event_id] = sent
        to_notification = [(t - changes[e]["changed_at"]) * 1000 for e, t in notified.items()]
        after_notification = [(got[e] - t) * 1000 for e, t in notified.items() if e in got]
        bad_deliveries = [d for d in deliveries if not (200 <= int(d.get("status") or 0) < 300)]

        def summary(entries: list[dict[str, Any]]) -> tuple[int, int]:
            return sum(1 for r in entries if not is_page(r)), len(entries)

        rounds, pages = summary(reads)
        rounds_at_last, pages_at_last = summary(at_last_blocker)
        per_room = Counter(r["mailbox"] for r in reads if not is_page(r))
        not_ok = Counter(r["status"] for r in reads if r["status"] != 200)
        n = len(changes)

        print()
        print(
            f"changes made: {n}/{count} in {load_end - begin:.1f} s "
            f"({n / max(load_end - begin, 1e-9):.1f}/s); creation errors {len(errors)}; "
            f"generator lag behind schedule {quantiles(lags)}"
        )
        print(
            f"Outlook change → first blocker.upserted at the platform "
            f"({len(latencies)}/{n}, {args.rate:g}/s over {len(rooms)} rooms): "
            f"{quantiles(latencies)}"
        )
        print(
            f"  change → notification sent by the tenant ({len(to_notification)}): "
            f"{quantiles(to_notification)}"
        )
        print(
            f"  notification sent → blocker ({len(after_notification)}): "
            f"{quantiles(after_notification)}"
        )
        print(
            f"calendarView/delta reads by the product: {rounds} rounds, {pages} page requests "
            f"({rounds / max(n, 1):.3f} rounds and {pages / max(n, 1):.3f} pages per change); "
            f"until the last blocker: {rounds_at_last} rounds, {pages_at_last} pages"
        )
        print(
            "  rounds per room: "
            + ", ".join(f"{resource_of.get(m, m)} {per_room.get(m, 0)}" for m in rooms)
        )
        if not_ok:
            print(f"  delta answers other than 200: {dict(not_ok)}")
        print(f"  most sync-mailbox messages waiting at a progress line: {peak_depth[0]}")
        print(
            f"notifications: {len(deliveries)} POSTs to the product, {len(bad_deliveries)} not 2xx"
            + (
                f" (statuses {dict(Counter(d.get('status') for d in bad_deliveries))})"
                if bad_deliveries
                else ""
            )
        )
        dupes = sum(1 for e in changes if upserts.get(e, 0) > 1)
        others = sum(v for k, v in upserts.items() if k not in changes)
        print(
            f"blocker.upserted: {sum(upserts[e] for e in changes)} for the {n} changed events "
            f"({dupes} events got more than one), {others} for other events; "
            f"blocker.deleted {len(stack.platform.received('blocker.deleted'))}; "
            f"rejected {len(stack.platform.rejected())}, failed {len(stack.platform.failed())}, "
            f"with problems {sum(1 for r in stack.platform.received() if r.get('problems'))}"
        )
        slowest = sorted(
            ((got[e] - c["changed_at"]) * 1000, e) for e, c in changes.items() if e in got
        )[-3:]
        print(
            "slowest: "
            + "; ".join(
                f"{resource_of[changes[e]['room']]} {ms:.0f} ms (changed at "
                f"+{changes[e]['changed_at'] - wall_begin:.1f} s)"
                for ms, e in reversed(slowest)
            )
        )
        slow_reads = [r for r in reads if float(r.get("durationMs") or 0) > 2000]
        if slow_reads:
            print(
                f"WARNING: {len(slow_reads)} delta requests took over 2 s at the tenant, e.g. "
                + ", ".join(f"{r['mailbox']} {r['durationMs']} ms" for r in slow_reads[:3])
            )
        dump = stack.state / "load-run.json"
        dump.write_text(
            json.dumps(
                {
                    "wall_begin": wall_begin,
                    "rooms": resource_of,
                    "changes": changes,
                    "first_blocker": got,
                    "notified": notified,
                    "graph_requests": control.requests(kind="graph", since=request_base),
                    "deliveries": deliveries,
                },
                indent=1,
            )
        )
        print(f"raw data: {dump}")
        if missing or not all_arrived:
            print(
                f"WARNING: {len(missing)} changes got no blocker within {args.drain:g} s after "
                f"the load (e.g. {missing[:3]}); waited {drained - load_end:.1f} s"
            )
        if wrong_room:
            print(f"WARNING: {len(wrong_room)} blockers name another resource than their room")
        if errors:
            print(f"WARNING: creation errors, e.g. {errors[:3]}")
        print(
            f"RESULT rooms={len(rooms)} rate={args.rate:g} duration={args.duration:g} "
            f"changes={n} blockers={len(latencies)} "
            f"p50={percentile(latencies, 50) if latencies else float('nan'):.0f} "
            f"p95={percentile(latencies, 95) if latencies else float('nan'):.0f} "
            f"p99={percentile(latencies, 99) if latencies else float('nan'):.0f} "
            f"rounds={rounds} pages={pages} rounds/change={rounds / max(n, 1):.3f} "
            f"pages/change={pages / max(n, 1):.3f}"
        )
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
