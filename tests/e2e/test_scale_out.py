"""Several instances of the app competing for the work, as in Azure.

Graph's per-mailbox limit (four requests in flight, then 429 "MailboxConcurrency") is enforced by
the simulated tenant; every event request there takes 200 ms, so a burst keeps the limit busy.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
import requests

from sandbox import Sandbox
from sandbox.platform import PlatformSim
from sync_core.clock import parse_iso
from tests.conftest import KEY_HEADER, ROOM_A, LocalHost, drained, product_env, wait
from tests.e2e.test_bookings import ours

BURST = 40


@pytest.fixture
def three_instances(
    tenant_env: dict[str, str], platform: PlatformSim, tenant: Sandbox
) -> Iterator[tuple[LocalHost, PlatformSim, Sandbox]]:
    host = LocalHost(product_env(tenant_env, platform), instances=3).wait_ready()
    platform.product_url = host.base
    host.map("room-42", ROOM_A)
    yield host, platform, tenant
    host.stop()


def test_a_burst_into_one_room_from_three_instances_is_never_throttled(
    three_instances: tuple[LocalHost, PlatformSim, Sandbox],
) -> None:
    host, platform, tenant = three_instances
    tenant.control.add_fault(r".*/events.*", action="delay", delay=0.2, probability=1.0)
    tenant.control.clear_requests()
    events = [platform.booking_event(resource_id="room-42", title=f"B{i}") for i in range(BURST)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(platform.send_booking, events))
    assert [a.status_code for a in answers] == [202] * BURST
    ids = {str(e["data"]["id"]) for e in events}

    wait(
        lambda: ids <= {r["data"]["booking_id"] for r in platform.received("booking.synced")},
        timeout=120,
        what=f"all {BURST} bookings to be synced",
    )
    wait(lambda: drained(host), timeout=60, what="the queued work to be done")

    landed = Counter(booking_id for booking_id in ids for _ in ours(tenant, ROOM_A, booking_id))
    assert landed == Counter({booking_id: 1 for booking_id in ids})  # each exactly once
    room = tenant.control.requests(mailbox=ROOM_A)
    throttled = [r for r in room if r["throttled"] or r["status"] == 429]
    assert throttled == []
    posts = [r for r in room if r["method"] == "POST" and r["status"] == 201]
    assert len(posts) == BURST
    # The instances used the limit (so the test could have seen a fifth request at once).
    assert 2 <= most_at_once(posts) <= 4


def most_at_once(entries: list[dict[str, object]]) -> int:
    """The most requests the tenant's log shows in flight at the same time."""
    edges: list[tuple[datetime, int]] = []
    for entry in entries:
        end = parse_iso(entry["time"])
        assert end is not None
        start = end - timedelta(milliseconds=float(str(entry["durationMs"])))
        edges += [(start, 1), (end, -1)]
    peak = current = 0
    for _, step in sorted(edges):
        current += step
        peak = max(peak, current)
    return peak


def test_a_booking_whose_instance_died_mid_apply_lands_within_two_minutes(
    tenant_env: dict[str, str], platform: PlatformSim, tenant: Sandbox
) -> None:
    env = product_env(tenant_env, platform)
    first = LocalHost(env).wait_ready()
    platform.product_url = first.base
    first.map("room-42", ROOM_A)
    # The create reaches Outlook, but only after the instance that sent it is gone: the event
    # exists and the product never heard back (the hardest point to die at).
    fault = tenant.control.add_fault(r"/calendar/events$", "POST", action="delay", delay=5.0)
    event = platform.booking_event(resource_id="room-42", title="Survivor")
    booking_id = str(event["data"]["id"])
    sent = time.monotonic()
    assert platform.send_booking(event).status_code == 202
    wait(
        lambda: [f for f in tenant.control.faults() if f["id"] == fault["id"] and f["hits"]],
        timeout=30,
        what="the create to reach the tenant",
    )
    first.kill()
    wait(lambda: ours(tenant, ROOM_A, booking_id), timeout=30, what="the event to be created")

    second = LocalHost(env).wait_ready()  # another instance; the queue hides the message 10 min
    platform.product_url = second.base
    try:
        wait(
            lambda: [
                r
                for r in platform.received("booking.synced")
                if r["data"]["booking_id"] == booking_id
            ],
            timeout=120,
            what="the booking to be synced by the surviving instance",
        )
        landed = time.monotonic() - sent
        assert landed < 120, landed
        assert len(ours(tenant, ROOM_A, booking_id)) == 1  # adopted, not created twice
        history = requests.get(
            f"{second.base}/api/admin/history",
            params={"resource_id": "room-42"},
            headers=KEY_HEADER,
            timeout=10,
        ).json()["value"]
        created = [h for h in history if h["action"] == "booking.create"]
        assert [h["detail"] for h in created] == [f"adopted the event already in {ROOM_A}"]
        print(f"landed {landed:.0f} s after it was sent, on the surviving instance")
    finally:
        second.stop()
