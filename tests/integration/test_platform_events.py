"""A mapping's changes of state as the platform hears of them, against Azurite: each change is
reported once however many instances see it (ETag-guarded writes), a recovery is seen at once
whichever instance recorded the error, and the change feed's loss is reported once until it is
restored. Also ``platform.test`` when the platform is slow, unreachable or not configured, and
``booking.failed`` for a change parked after it stalled too often."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sandbox import Sandbox
from sandbox.platform import PlatformSim
from sync_core import platform as platform_module
from sync_core.admin.platform_test import PlatformNotConfigured, send_platform_test
from sync_core.config import load_settings
from sync_core.inbound import subscriptions
from sync_core.outbound import recover
from sync_core.services import Services
from sync_core.store.health import HealthChange, HealthRepository
from sync_core.store.mappings import Mapping
from sync_core.store.open_work import TABLE as OPEN_WORK
from sync_core.store.queues import DELIVER, decode_message
from sync_core.store.tables import TableStore

DENIED = {"code": "ErrorAccessDenied", "message": "Access is denied.", "hint": "check the scope"}
THROTTLED = {"code": "TooManyRequests", "message": "Slow down.", "hint": "wait"}


class Heard:
    """The changes reported, across every repository that reports into it."""

    def __init__(self) -> None:
        self.changes: list[HealthChange] = []
        self._lock = threading.Lock()

    def __call__(self, change: HealthChange) -> None:
        with self._lock:
            self.changes.append(change)

    def kinds(self) -> list[str]:
        with self._lock:
            return [c.kind for c in self.changes]


def instance(storage: str, heard: Heard) -> HealthRepository:
    """One instance's repository: its own storage client, reporting into ``heard``."""
    from sync_core.config import StorageSettings

    return HealthRepository(
        TableStore.from_settings(StorageSettings(connection_string=storage)), heard
    )


def test_a_change_seen_by_many_instances_at_once_is_reported_once(storage: str) -> None:
    heard = Heard()
    instances = [instance(storage, heard) for _ in range(6)]
    instances[0].success("room-42")  # the row exists: every instance replaces it by its ETag
    start = threading.Barrier(len(instances))

    def all_at_once(action: str) -> None:
        def run(repo: HealthRepository) -> None:
            start.wait()
            if action == "failure":
                repo.failure("room-42", DENIED)
            else:
                repo.success("room-42")

        threads = [threading.Thread(target=run, args=(repo,)) for repo in instances]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

    all_at_once("failure")
    assert heard.kinds() == ["mapping.error"]
    assert instances[3].get("room-42").state == "error"
    all_at_once("success")
    assert heard.kinds() == ["mapping.error", "mapping.recovered"]
    assert instances[5].get("room-42").state == "ok"


def test_the_writer_that_loses_the_race_reads_again_and_reports_nothing(storage: str) -> None:
    """Instance A reads "ok"; instance B records the error before A writes; A's write is
    refused by the ETag, A reads "error" and has no change left to report."""
    heard = Heard()
    first, second = instance(storage, heard), instance(storage, heard)
    first.success("room-42")
    read = first.tables.get
    interleaved: list[str] = []

    def get_then_let_the_other_write(table: str, partition: str, row: str) -> Any:
        found = read(table, partition, row)
        if not interleaved:
            interleaved.append("B wrote")
            second.failure("room-42", DENIED)
        return found

    first.tables.get = get_then_let_the_other_write  # type: ignore[method-assign]
    first.failure("room-42", THROTTLED)
    assert interleaved == ["B wrote"]
    assert heard.kinds() == ["mapping.error"]  # B's, once
    assert first.get("room-42").last_error == THROTTLED  # A's write went in after reading again


def test_a_new_error_while_failing_is_stored_but_not_reported(storage: str) -> None:
    heard = Heard()
    repo = instance(storage, heard)
    repo.failure("room-42", DENIED)
    repo.failure("room-42", THROTTLED)
    repo.failure("room-42", DENIED)
    assert heard.kinds() == ["mapping.error"]
    assert repo.get("room-42").last_error == DENIED
    assert heard.changes[0].error == DENIED


def test_a_recovery_is_reported_whichever_instance_saw_the_error(
    storage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A works (and wrote "ok" a moment ago), B records an error, A works again within the
    minute in which a healthy mapping's success is not rewritten, once A's few seconds of
    trusting its own "healthy" are over: the recovery is written."""
    heard = Heard()
    a, b = instance(storage, heard), instance(storage, heard)
    a.success("room-42")
    b.failure("room-42", DENIED)
    a.success("room-42")  # within A's trust: no read, nothing seen yet
    assert heard.kinds() == ["mapping.error"]
    monkeypatch.setattr(a._healthy, "max_age", 0.0)  # the few seconds have passed
    a.success("room-42")
    assert heard.kinds() == ["mapping.error", "mapping.recovered"]
    assert b.get("room-42").state == "ok"
    a.success("room-42")  # healthy and written just now: nothing to write, nothing to report
    assert heard.kinds() == ["mapping.error", "mapping.recovered"]


def test_a_lost_change_feed_is_reported_once_and_holds_back_the_recovery(storage: str) -> None:
    heard = Heard()
    a, b = instance(storage, heard), instance(storage, heard)
    a.failure("room-42", DENIED)
    assert a.lost("room-42", DENIED) is True
    assert b.lost("room-42", DENIED) is False  # already marked: no second event
    b.success("room-42")  # bookings work, but Outlook changes do not arrive: still in error
    assert a.get("room-42").state == "error"
    assert a.get("room-42").last_success is not None
    assert a.lost_ones() == {"room-42"}
    assert b.restored("room-42") is True
    assert a.restored("room-42") is False
    assert a.lost_ones() == set()
    a.success("room-42")
    assert heard.kinds() == ["mapping.error", "subscription.lost", "mapping.recovered"]
    assert a.lost("room-42", DENIED) is True  # lost again after it was restored: reported again
    assert heard.kinds()[-1] == "subscription.lost"


def test_a_report_that_fails_does_not_fail_the_caller(storage: str) -> None:
    def broken(change: HealthChange) -> None:
        raise RuntimeError("queue unreachable")

    repo = HealthRepository(instance(storage, Heard()).tables, broken)
    repo.failure("room-42", DENIED)
    assert repo.get("room-42").state == "error"


# -- through the services: the events as queued for the platform ---------------------------------


@pytest.fixture
def svc(settings_env: dict[str, str], platform: PlatformSim) -> Services:
    env = settings_env | {"PLATFORM_WEBHOOK_URL": platform.webhook_url}
    services = Services(load_settings(env, Path("/nonexistent")))
    moment = datetime.now(UTC)
    services.mappings.create(
        Mapping("room-42", "room.berlin@contoso.example", "full", True, moment, moment)
    )
    return services


def queued(svc: Services) -> list[dict[str, Any]]:
    """The bodies of the deliveries waiting in the queue, delivered here (so the simulated
    platform verifies them)."""
    queue = svc.queues.queue(DELIVER)
    bodies = []
    for message in queue.receive_messages(max_messages=32, visibility_timeout=60):
        payload = json.loads(decode_message(message.content))
        assert svc.platform.deliver(payload)
        queue.delete_message(message)
        bodies.append(payload["body"])
    return sorted(bodies, key=lambda body: int(body["data"]["sequence"]))


def test_the_services_queue_each_change_with_the_mapping_s_mailbox(
    svc: Services, platform: PlatformSim
) -> None:
    svc.health.failure("room-42", {**DENIED, "mailbox": "room.berlin@contoso.example"})
    svc.health.failure("room-42", THROTTLED)
    svc.health.lost("room-42", DENIED)
    svc.health.success("room-42")  # held back: the feed is lost
    svc.health.restored("room-42")
    svc.health.success("room-42")
    bodies = queued(svc)
    assert [b["type"] for b in bodies] == [
        "mapping.error",
        "subscription.lost",
        "mapping.recovered",
    ]
    error = bodies[0]["data"]
    assert error["resource_id"] == "room-42"
    assert error["mailbox"] == "room.berlin@contoso.example"
    assert error["error"] == DENIED  # code, message, hint; nothing else
    assert [b["data"]["mailbox"] for b in bodies] == ["room.berlin@contoso.example"] * 3
    sequences = [b["data"]["sequence"] for b in bodies]
    assert sequences == sorted(sequences) and len(set(sequences)) == 3
    received = platform.received()
    assert [r["type"] for r in received] == [b["type"] for b in bodies]
    assert all(not r["problems"] for r in received), received


# -- platform.test: slow, unreachable, not configured ----------------------------------------------


def test_a_slow_platform_is_reported_as_not_delivered(
    svc: Services, platform: PlatformSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(platform_module, "TEST_TIMEOUT", (2.0, 0.5))
    platform.delay_next(1, 2.0)
    result = send_platform_test(svc)
    assert result["delivered"] is False
    assert result["status"] is None
    assert "did not answer in time" in result["error"]
    assert 400 <= result["latency_ms"] < 2000
    # Not retried: the next test event is the next delivery the platform sees.
    again = send_platform_test(svc)
    assert again["delivered"] is True and again["status"] == 204
    assert "error" not in again
    # The slow one is still taken in, late; neither is sent twice.
    tests = platform.wait_for(lambda got: len(got) >= 2)
    assert [r["type"] for r in tests] == ["platform.test", "platform.test"]
    assert [r["duplicates"] for r in tests] == [0, 0]
    assert all(not r["problems"] for r in tests)
    entries, _ = svc.history.page(page_size=10)
    outcomes = [e.outcome for e in entries if e.action == "deliver.platform.test"]
    assert outcomes == ["ok", "failed"]  # newest first


def test_an_unreachable_platform_and_none_configured(svc: Services) -> None:
    from devhost.azurite import free_port

    unreachable = Services(
        replace(svc.settings, platform_webhook_url=f"http://127.0.0.1:{free_port()}/hook")
    )
    result = send_platform_test(unreachable)
    assert result["delivered"] is False and result["status"] is None
    assert "could not be reached" in result["error"]
    assert isinstance(result["latency_ms"], int)

    missing = Services(replace(svc.settings, platform_webhook_url=""))
    with pytest.raises(PlatformNotConfigured) as refused:
        send_platform_test(missing)
    document = refused.value.to_json()
    assert document["status"] == 409
    assert "PLATFORM_WEBHOOK_URL" in document["hint"]


# -- a change that stalls too often ---------------------------------------------------------------


def test_a_change_parked_after_stalling_tells_the_platform(
    svc: Services, platform: PlatformSim
) -> None:
    event = platform.booking_event(resource_id="room-42")
    booking_id = event["data"]["id"]
    svc.bookings.save(booking_id, 1, event, "msg_1")
    late = svc.open_work.open(booking_id, 1, after=timedelta(seconds=-5), tries=recover.MAX_TRIES)
    assert recover.recover_stalled(svc) == 0
    failed = platform.wait_for(lambda got: [r for r in got if r["type"] == "booking.failed"])
    assert len(failed) == 1
    data = failed[0]["data"]
    assert data["booking_id"] == booking_id and data["version"] == 1
    assert data["resource_id"] == "room-42"
    assert data["error"]["code"] == recover.STALLED_CODE
    assert "resync" in data["error"]["hint"].lower()
    assert not failed[0]["problems"]
    assert svc.tables.get(OPEN_WORK, late.due, late.row) is None  # closed
    entries, _ = svc.history.page(page_size=10)
    parked = [e for e in entries if e.subject == booking_id]
    assert [(e.action, e.outcome) for e in parked] == [("booking.apply", "parked")]
    assert parked[0].error is not None and parked[0].error["code"] == recover.STALLED_CODE


def test_a_renewal_that_works_clears_the_lost_mark(
    tenant_env: dict[str, str], tenant: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.test_subscription_renewal import ROOMS, subscribe

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tenant_env["REQUESTS_CA_BUNDLE"])
    svc = Services(load_settings(tenant_env, Path("/nonexistent")))
    heard = Heard()
    svc.health = HealthRepository(svc.tables, heard)  # type: ignore[misc]
    soon = datetime.now(UTC) + timedelta(minutes=30)  # due: renewed by the next pass
    for address in ROOMS[:2]:
        subscribe(svc, tenant, address, soon)
    resource = "res-" + ROOMS[0].split("@", maxsplit=1)[0]
    svc.health.lost(resource, DENIED)
    assert svc.health.lost_ones() == {resource}
    report = subscriptions.renew_all(svc)
    assert report.renewed == 2 and report.failed == 0
    assert svc.health.lost_ones() == set()
    assert heard.kinds() == ["subscription.lost"]  # cleared without an event of its own
