"""Microsoft 365 into the platform, end to end: Outlook changes in the simulated tenant become
blockers at the simulated platform, through Graph notifications, the local host and Azurite."""

from __future__ import annotations

import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from sandbox import Sandbox
from sandbox.platform import PlatformSim
from sync_core.clock import parse_iso
from sync_core.config import load_settings
from sync_core.inbound import sync as inbound
from sync_core.services import Services
from tests.conftest import KEY_HEADER, ROOM_A, ROOM_B, LocalHost, drained, send_and_sync, wait

Stack = tuple[LocalHost, PlatformSim, Sandbox]


def slot(day: int, hour: int, minutes: int = 60) -> dict[str, Any]:
    start = (datetime.now(UTC) + timedelta(days=day)).replace(
        hour=hour, minute=0, second=0, microsecond=0
    )
    return {
        "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "end": {
            "dateTime": (start + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S"),
            "timeZone": "UTC",
        },
    }


def blockers(platform: PlatformSim, kind: str = "blocker.upserted") -> list[dict[str, Any]]:
    return [r for r in platform.received() if r["type"] == kind]


def idle(host: LocalHost) -> None:
    """Wait until the work queued so far (the set-up's reads, their deliveries) is done."""
    wait(lambda: drained(host), what="the queued work to be done")


CONTROL_DAY = 20  # the controls' slots: away from every event the tests create


def control(stack: Stack, mailbox: str = ROOM_A, hour: int = 9) -> dict[str, Any]:
    """A positive control for "nothing (more) arrived": an Outlook event created now, whose
    blocker must arrive, and then no work may be left queued. A mailbox's delta read covers
    every change before it, so the read that found the control had seen the earlier changes,
    and once the queues are empty whatever those caused has arrived, however slow the worker.
    Returns the control event."""
    host, platform, tenant = stack
    event = tenant.control.create_event(mailbox, {"subject": "Control", **slot(CONTROL_DAY, hour)})
    wait(
        lambda: [b for b in blockers(platform) if b["data"]["source"]["event_id"] == event["id"]],
        what="the control's blocker",
    )
    idle(host)
    return event


def source_ids(platform: PlatformSim, kind: str = "blocker.upserted") -> list[str]:
    return [b["data"]["source"]["event_id"] for b in blockers(platform, kind)]


def delta_reads(tenant: Sandbox, mailbox: str = ROOM_A) -> int:
    return sum(
        1
        for r in tenant.control.requests(mailbox=mailbox)
        if "calendarView/delta" in r["path"] and "skiptoken" not in r["path"].lower()
    )


def subscription_of(tenant: Sandbox, mailbox: str = ROOM_A) -> dict[str, Any]:
    return next(s for s in tenant.control.subscriptions() if mailbox in s["resource"].lower())


def test_validation_echo_on_both_routes(stack: Stack) -> None:
    host, _, _ = stack
    token = "Validation: Token with spaces & symbols/+=?%"
    for route in ("notifications", "lifecycle"):
        answer = requests.post(
            f"{host.base}/api/graph/{route}?validationToken={quote(token, safe='')}", timeout=5
        )
        assert answer.status_code == 200
        assert answer.headers["Content-Type"].startswith("text/plain")
        assert answer.text == token


def test_outlook_create_update_delete_become_blocker_changes(stack: Stack) -> None:
    host, platform, tenant = stack
    idle(host)
    platform.clear()
    event = tenant.control.create_event(ROOM_A, {"subject": "Board", **slot(2, 9)})
    first = wait(lambda: blockers(platform), what="blocker.upserted")[0]["data"]
    assert first["title"] == "Board"
    assert first["show_as"] == "busy"
    assert first["source"]["mailbox"] == ROOM_A
    assert first["source"]["event_id"] == event["id"]
    assert first["resource_id"] == "room-42"

    tenant.control.update_event(ROOM_A, event["id"], {"subject": "Board (moved)", **slot(2, 11)})
    second = wait(lambda: blockers(platform)[1:], what="the update")[0]["data"]
    assert second["id"] == first["id"]
    assert second["title"] == "Board (moved)"
    assert second["sequence"] > first["sequence"]

    tenant.control.delete_event(ROOM_A, event["id"])
    gone = wait(lambda: blockers(platform, "blocker.deleted"), what="blocker.deleted")[0]["data"]
    assert gone["id"] == first["id"]
    control(stack)
    assert not [r for r in platform.received() if r["problems"]]


def test_private_and_free_events(stack: Stack) -> None:
    host, platform, tenant = stack
    idle(host)
    platform.clear()
    doctor = tenant.control.create_event(
        ROOM_A, {"subject": "Doctor", "sensitivity": "private", **slot(3, 9)}
    )
    free = tenant.control.create_event(
        ROOM_A, {"subject": "Lunch", "showAs": "free", **slot(3, 12)}
    )
    private = wait(lambda: blockers(platform), what="the private blocker")[0]["data"]
    assert private["title"] is None
    checked = control(stack)
    # The free event does not block.
    assert sorted(source_ids(platform)) == sorted([doctor["id"], checked["id"]])
    tenant.control.update_event(ROOM_A, free["id"], {"showAs": "busy"})
    wait(lambda: free["id"] in source_ids(platform), what="the event turning busy")
    tenant.control.update_event(ROOM_A, free["id"], {"showAs": "free"})
    wait(lambda: blockers(platform, "blocker.deleted"), what="the event turning free")


def test_a_weekly_series_is_one_blocker_per_occurrence(stack: Stack) -> None:
    host, platform, tenant = stack
    idle(host)
    platform.clear()
    start = (datetime.now(UTC) + timedelta(days=1)).date()
    tenant.control.create_event(
        ROOM_A,
        {
            "subject": "Weekly sync",
            **slot(1, 14),
            "recurrence": {
                "pattern": {
                    "type": "weekly",
                    "interval": 1,
                    "daysOfWeek": [start.strftime("%A").lower()],
                },
                "range": {
                    "type": "numbered",
                    "startDate": start.isoformat(),
                    "numberOfOccurrences": 4,
                },
            },
        },
    )
    wait(lambda: len(blockers(platform)) >= 4, what="four occurrences")
    checked = control(stack)
    series = [b for b in blockers(platform) if b["data"]["source"]["event_id"] != checked["id"]]
    assert len({b["data"]["id"] for b in series}) == 4
    assert {b["data"]["title"] for b in series} == {"Weekly sync"}


def test_projections_are_never_echoed_and_drift_is_repaired(stack: Stack) -> None:
    host, platform, tenant = stack
    idle(host)
    platform.clear()
    booking = platform.booking_event(resource_id="room-42")
    platform.send_booking(booking)
    synced = wait(
        lambda: [r for r in platform.received() if r["type"] == "booking.synced"], what="sync"
    )[0]["data"]
    event_id = synced["event_id"]
    checked = control(stack)
    # Our own event never comes back as a blocker: the control's is the only one.
    assert source_ids(platform) == [checked["id"]]
    assert all(r["type"] != "blocker.deleted" for r in platform.received())

    tenant.control.update_event(ROOM_A, event_id, {"subject": "Hijacked"})
    wait(
        lambda: tenant.control.event(ROOM_A, event_id)["subject"] == "Sprint review",
        what="the title to be restored",
    )
    tenant.control.delete_event(ROOM_A, event_id)

    def restored() -> list[dict[str, Any]]:
        return [
            e
            for e in tenant.control.events(ROOM_A)
            if any(
                p.get("value") == booking["data"]["id"]
                for p in e.get("singleValueExtendedProperties") or []
            )
        ]

    wait(restored, what="the deleted projection to be recreated")
    again = control(stack, hour=11)
    assert source_ids(platform) == [checked["id"], again["id"]]
    assert all(r["type"] != "blocker.deleted" for r in platform.received())
    history = requests.get(
        f"{host.base}/api/admin/mappings/room-42", headers=KEY_HEADER, timeout=10
    )
    assert history.status_code == 200


def run_function(host: LocalHost, name: str) -> None:
    """Run a timer function once through the local host, as an admin would."""
    answer = requests.post(
        f"{host.base}/admin/functions/{name}", json={"input": ""}, headers=KEY_HEADER, timeout=60
    )
    assert answer.status_code == 202


def quiet(tenant: Sandbox) -> None:
    """Wait until the reads the set-up started are over, then clear the request log."""
    for _ in range(20):
        tenant.control.clear_requests()
        time.sleep(1.2)
        if delta_reads(tenant) == 0:
            return
    raise AssertionError("the mailbox never went quiet")


def test_wrong_client_state_reads_nothing(stack: Stack) -> None:
    host, _, tenant = stack
    sub = subscription_of(tenant)
    quiet(tenant)
    forged = {
        "value": [
            {
                "subscriptionId": sub["id"],
                "clientState": "not-the-secret",
                "changeType": "created",
                "resource": f"Users/{ROOM_A}/Events/AAMk",
                "tenantId": tenant.tenant_id,
            }
        ]
    }
    answer = requests.post(f"{host.base}/api/graph/notifications", json=forged, timeout=5)
    assert answer.status_code == 202
    assert answer.json() == {"accepted": 0}
    # The control is in another mailbox, so that its own reads do not count here.
    control(stack, ROOM_B)
    assert delta_reads(tenant) == 0


def test_lifecycle_events(stack: Stack) -> None:
    host, platform, tenant = stack
    idle(host)
    before = subscription_of(tenant)["id"]
    tenant.control.clear_requests()
    tenant.control.send_lifecycle(before, "missed")
    wait(lambda: delta_reads(tenant) >= 1, what="a resync after missed")

    tenant.control.send_lifecycle(before, "reauthorizationRequired", pause=True)
    wait(
        lambda: any("reauthorize" in r["path"] for r in tenant.control.requests()),
        what="reauthorize",
    )
    tenant.control.send_lifecycle(before, "subscriptionRemoved")
    after = wait(
        lambda: [
            s
            for s in tenant.control.subscriptions()
            if s["id"] != before and ROOM_A in s["resource"].lower()
        ],
        what="a new subscription",
    )[0]
    platform.clear()
    tenant.control.create_event(ROOM_A, {"subject": "After recreate", **slot(4, 9)})
    wait(lambda: blockers(platform), what="notifications on the new subscription")
    assert after["id"] != before


def test_lost_delta_token_recovers_without_duplicates_or_false_deletes(stack: Stack) -> None:
    host, platform, tenant = stack
    for hour in (8, 10, 12):
        tenant.control.create_event(ROOM_A, {"subject": f"Kept {hour}", **slot(5, hour)})
    wait(lambda: len(blockers(platform)) >= 3, what="three blockers")
    idle(host)
    platform.clear()
    tenant.control.invalidate_delta(ROOM_A)
    tenant.control.create_event(ROOM_A, {"subject": "New after reset", **slot(6, 9)})
    wait(lambda: blockers(platform), what="the new blocker")
    control(stack)
    received = platform.received()
    assert [r for r in received if r["type"] == "blocker.deleted"] == []
    titles = [r["data"]["title"] for r in received if r["type"] == "blocker.upserted"]
    assert titles == ["New after reset", "Control"]  # the unchanged ones are not sent again


def test_two_hundred_notifications_are_read_one_at_a_time_and_covered(stack: Stack) -> None:
    """A burst is read at once, then once more after each read during which notifications
    arrived: reads never overlap, come back to back, and the last starts after the last
    notification was answered."""
    host, _, tenant = stack
    idle(host)
    sub = subscription_of(tenant)
    svc = Services(load_settings(host.env, Path("/nonexistent")))
    record = svc.subscriptions.by_id(sub["id"])
    assert record is not None
    quiet(tenant)
    item = {
        "subscriptionId": sub["id"],
        "clientState": record.client_state,
        "changeType": "updated",
        "resource": f"Users/{ROOM_A}/Events/AAMk",
        "tenantId": tenant.tenant_id,
    }

    sent: list[datetime] = []

    def notify(_: int) -> int:
        sent.append(datetime.now(UTC))
        answer = requests.post(
            f"{host.base}/api/graph/notifications", json={"value": [item]}, timeout=10
        )
        return answer.status_code

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:  # a burst, as Graph sends them
        statuses = list(pool.map(notify, range(200)))
    took = time.monotonic() - started
    assert statuses == [202] * 200
    # Each accepted notification is covered by a queued read: once the queues are empty, every
    # read has run.
    idle(host)
    reads = sorted(
        (end - timedelta(milliseconds=r["durationMs"]), end)
        for r in tenant.control.requests(mailbox=ROOM_A)
        if "calendarView/delta" in r["path"] and (end := parse_iso(r["time"])) is not None
    )
    print(f"200 notifications answered in {took:.2f} s, read in {len(reads)} delta requests")
    assert reads, "nothing was read"
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(reads)), reads  # one at a time
    assert reads[-1][0] >= max(sent), (reads[-1], max(sent))  # the last one is covered
    # Coalesced: a read per notification would be 200; back to back they are one per read time.
    assert len(reads) <= 20, reads


def test_two_workers_racing_on_one_mailbox_send_no_duplicates(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, platform, tenant = stack
    idle(host)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", host.env["REQUESTS_CA_BUNDLE"])
    svc = Services(load_settings(host.env, Path("/nonexistent")))
    for hour in (8, 9, 10, 11):
        tenant.control.create_event(ROOM_A, {"subject": f"Race {hour}", **slot(7, hour)})
    time.sleep(0.5)
    threads = [
        threading.Thread(target=inbound.sync_mailbox, args=(svc, {"mailbox": ROOM_A, "full": True}))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    control(stack)
    received = platform.received()
    upserts = [r["data"]["id"] for r in received if r["type"] == "blocker.upserted"]
    race = [
        r
        for r in received
        if r["type"] == "blocker.upserted" and r["data"]["title"].startswith("Race")
    ]
    assert len({r["data"]["id"] for r in race}) == 4
    assert len(race) == 4, json.dumps([r["data"]["title"] for r in race])
    assert len(upserts) == len(set(upserts))


def test_the_window_moving_a_day_retires_old_blockers(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, platform, tenant = stack
    idle(host)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", host.env["REQUESTS_CA_BUNDLE"])
    svc = Services(load_settings(host.env, Path("/nonexistent")))
    tenant.control.create_event(ROOM_A, {"subject": "Tomorrow", **slot(1, 9)})
    wait(lambda: blockers(platform), what="a blocker")
    idle(host)
    platform.clear()
    # A blocker stored yesterday for an event that has ended since.
    from sync_core.store.blockers import Blocker

    ended = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        hours=2
    )
    svc.blockers.put(
        Blocker(
            "blk_old",
            ROOM_A,
            "room-42",
            "old-event",
            None,
            ended - timedelta(hours=1),
            ended,
            False,
            "busy",
            "Yesterday",
            "x",
        )
    )
    quiet(tenant)  # no read in flight: the next one is ours, and not deferred as a burst
    cursor = svc.cursors.get(ROOM_A)
    svc.cursors._write(replace(cursor, window_start=ended))
    inbound.sync_mailbox(svc, {"mailbox": ROOM_A})
    checked = control(stack)
    received = platform.received()
    assert [r["data"]["id"] for r in received if r["type"] == "blocker.deleted"] == ["blk_old"]
    assert source_ids(platform) == [checked["id"]]  # nothing but the control
    assert svc.cursors.get(ROOM_A).window_start == ended.replace(hour=0) + timedelta(days=1)


def test_renewal_of_expiring_and_lost_subscriptions(stack: Stack) -> None:
    host, _, tenant = stack
    sub = subscription_of(tenant)
    svc = Services(load_settings(host.env, Path("/nonexistent")))
    record = svc.subscriptions.by_id(sub["id"])
    assert record is not None
    # Expiring: half the lifetime is gone.
    svc.subscriptions.save(replace(record, expires_at=datetime.now(UTC) + timedelta(hours=1)))
    run_function(host, "renew_subscriptions")
    renewed = svc.subscriptions.by_mailbox(ROOM_A)
    assert renewed is not None and renewed.subscription_id == sub["id"]
    assert renewed.expires_at > datetime.now(UTC) + timedelta(days=2)
    # Lost: Graph dropped it (404 on renewal) → recreated.
    tenant.control.expire_subscription(sub["id"])
    svc.subscriptions.save(replace(renewed, expires_at=datetime.now(UTC) + timedelta(hours=1)))
    run_function(host, "renew_subscriptions")
    recreated = svc.subscriptions.by_mailbox(ROOM_A)
    assert recreated is not None and recreated.subscription_id != sub["id"]
    assert any(s["id"] == recreated.subscription_id for s in tenant.control.subscriptions())


def test_a_subscription_created_but_never_recorded_is_deleted(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, _, tenant = stack
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", host.env["REQUESTS_CA_BUNDLE"])
    svc = Services(load_settings(host.env, Path("/nonexistent")))
    # A worker asked Graph for a subscription and died before recording it.
    orphan = svc.graph.create_subscription(
        resource=f"users/{ROOM_A}/events",
        change_type="created,updated,deleted",
        notification_url=svc.settings.notification_url,
        lifecycle_url=svc.settings.lifecycle_url,
        expiration=datetime.now(UTC) + timedelta(days=2),
        client_state="lost",
    )
    svc.tables.upsert(
        "subscriptions",
        {"PartitionKey": "intent", "RowKey": ROOM_A, "At": datetime.now(UTC) - timedelta(hours=1)},
    )
    run_function(host, "renew_subscriptions")
    ids = {s["id"] for s in tenant.control.subscriptions()}
    assert orphan["id"] not in ids
    kept = svc.subscriptions.by_mailbox(ROOM_A)
    assert kept is not None and kept.subscription_id in ids  # the recorded one stays
    assert svc.subscriptions.unfinished(timedelta(0)) == []


def test_the_echo_of_an_own_write_is_not_read_and_a_person_s_edit_is(stack: Stack) -> None:
    """Outlook's notification names the event and its changeKey: when that is the version this
    service just wrote, nothing is read; a person's edit of the same event is read (and the
    booking's event repaired)."""
    host, platform, tenant = stack
    idle(host)
    quiet(tenant)
    tenant.control.clear_deliveries()
    send_and_sync(platform, platform.booking_event(resource_id="room-42", title="Echo"))
    (written,) = [e for e in tenant.control.events(ROOM_A) if e["subject"] == "Echo"]
    tenant.control.wait_for_deliveries(
        lambda records: any(
            item.get("changeType") == "created" and written["id"] in str(item.get("resource"))
            for r in records
            if r.get("status") == 202
            for item in r["items"]
        ),
        timeout=15,
    )
    idle(host)
    assert delta_reads(tenant) == 0  # the create's echo was recognised

    tenant.control.update_event(ROOM_A, written["id"], {"subject": "Changed by a person"})
    wait(lambda: delta_reads(tenant) >= 1, what="the person's edit to be read")
    wait(
        lambda: tenant.control.event(ROOM_A, written["id"])["subject"] == "Echo",
        what="the booking's event to be repaired",
    )
