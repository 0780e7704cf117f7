"""What one anonymous request to the Graph routes may cost: storage requests and log lines stay a
handful however many notifications it carries, and a subscription written after its id was found
unknown is still accepted."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sync_core import api
from sync_core.config import load_settings
from sync_core.inbound.gate import NotificationGate
from sync_core.services import Services
from sync_core.store.mappings import Mapping
from sync_core.store.queues import SYNC_MAILBOX
from sync_core.store.subscriptions import SubscriptionRecord
from sync_core.store.transport import StorageTransport
from sync_core.web import Request, Response, serve
from tests.conftest import NO_LOCAL_SETTINGS, ROOM_A


class Counter:
    def __init__(self) -> None:
        self.requests: list[str] = []

    def reset(self) -> None:
        self.requests.clear()

    @property
    def count(self) -> int:
        return len(self.requests)


@pytest.fixture
def storage_requests(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter]:
    """Every request the product's storage clients send, as ``METHOD path``."""
    counter = Counter()
    send = StorageTransport.send

    def counted(self: StorageTransport, request: Any, **kwargs: Any) -> Any:
        counter.requests.append(f"{request.method} {request.url.split('?', 1)[0]}")
        return send(self, request, **kwargs)

    monkeypatch.setattr(StorageTransport, "send", counted)
    yield counter


def record(subscription_id: str = "sub-1", client_state: str = "right-state") -> SubscriptionRecord:
    return SubscriptionRecord(
        ROOM_A, "room-42", subscription_id, client_state, datetime.now(UTC) + timedelta(days=2)
    )


def new_services(settings_env: dict[str, str]) -> Services:
    """Another process's services, past their first use (which creates tables and queues)."""
    services = Services(load_settings(settings_env, NO_LOCAL_SETTINGS))
    services.tables.table(services.subscriptions.TABLE)
    services.queues.depth(SYNC_MAILBOX)
    return services


@pytest.fixture
def svc(settings_env: dict[str, str]) -> Services:
    services = Services(load_settings(settings_env, NO_LOCAL_SETTINGS))
    moment = datetime.now(UTC)
    services.mappings.create(Mapping("room-42", ROOM_A, "full", True, moment, moment))
    services.subscriptions.save(record())
    services.queues.depth(SYNC_MAILBOX)  # the queue exists: sends below are one request each
    return services


def post(svc: Services, items: list[dict[str, Any]], route: str = "notifications") -> Response:
    handler = api.graph_notifications if route == "notifications" else api.graph_lifecycle
    request = Request("POST", "", body=json.dumps({"value": items}).encode())
    return serve(lambda r: handler(r, svc), request)


def unknown_items(count: int) -> list[dict[str, Any]]:
    return [
        {"subscriptionId": str(uuid.uuid4()), "clientState": "x", "changeType": "updated"}
        for _ in range(count)
    ]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_thousand_unknown_ids_cost_one_query_and_one_log_line(
    svc: Services, storage_requests: Counter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    items = unknown_items(1000)
    assert len(json.dumps({"value": items})) < 256 * 1024
    storage_requests.reset()
    answer = post(svc, items)
    assert (answer.status, json.loads(answer.body)) == (202, {"accepted": 0})
    assert storage_requests.count == 1, storage_requests.requests
    assert warnings(caplog) == [
        f"dropped 1000 notification(s) for 1000 subscription(s) (unknown, or wrong "
        f"clientState), e.g. {items[0]['subscriptionId']!r}"
    ]
    # The same ids again, and new ones while that query is young, cost nothing.
    storage_requests.reset()
    assert post(svc, items).status == 202
    assert post(svc, unknown_items(1000)).status == 202
    assert post(svc, unknown_items(2)).status == 202
    assert storage_requests.count == 0, storage_requests.requests
    assert svc.queues.depth(SYNC_MAILBOX) == 0


def test_a_thousand_copies_of_a_known_id_are_one_read_and_one_sync(
    settings_env: dict[str, str], svc: Services, storage_requests: Counter
) -> None:
    other = new_services(settings_env)  # a fresh process: nothing remembered
    item = {"subscriptionId": "sub-1", "clientState": "right-state", "changeType": "updated"}
    storage_requests.reset()
    answer = post(other, [item] * 1000)
    assert (answer.status, json.loads(answer.body)) == (202, {"accepted": 1})
    # One point read of the subscription, one queued sync.
    assert storage_requests.count == 2, storage_requests.requests
    assert other.queues.depth(SYNC_MAILBOX) == 1


def test_many_wrong_client_states_for_a_known_id_read_it_at_most_twice(
    settings_env: dict[str, str],
    svc: Services,
    storage_requests: Counter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    other = new_services(settings_env)
    forged = [{"subscriptionId": "sub-1", "clientState": f"guess-{n}"} for n in range(1000)]
    storage_requests.reset()
    answer = post(other, forged)
    assert (answer.status, json.loads(answer.body)) == (202, {"accepted": 0})
    assert storage_requests.count <= 2, storage_requests.requests
    assert len(warnings(caplog)) == 1
    storage_requests.reset()
    post(other, forged)
    assert storage_requests.count == 0  # read again only once it is RECHECK seconds old


def test_lifecycle_copies_queue_one_message(svc: Services, storage_requests: Counter) -> None:
    item = {"subscriptionId": "sub-1", "clientState": "right-state", "lifecycleEvent": "missed"}
    answer = post(svc, [item] * 500 + unknown_items(500), route="lifecycle")
    assert (answer.status, json.loads(answer.body)) == (202, {"queued": 1})
    assert svc.queues.depth(SYNC_MAILBOX) == 1


@pytest.mark.parametrize("route", ["notifications", "lifecycle"])
def test_more_than_a_thousand_notifications_is_413(
    svc: Services, storage_requests: Counter, route: str
) -> None:
    storage_requests.reset()
    answer = post(svc, [{"subscriptionId": "s", "clientState": "c"}] * 1001, route)
    assert answer.status == 413
    assert json.loads(answer.body)["status"] == 413
    assert storage_requests.count == 0


def test_a_few_unknown_ids_are_point_reads_then_shared(
    svc: Services, storage_requests: Counter
) -> None:
    storage_requests.reset()
    post(svc, unknown_items(3))
    assert storage_requests.count == 3  # a few ids: point reads
    storage_requests.reset()
    post(svc, unknown_items(3))  # ids were found nowhere lately: one query for the next ones
    post(svc, unknown_items(3))
    post(svc, unknown_items(3))
    assert storage_requests.count == 1, storage_requests.requests


def test_a_subscription_written_after_its_id_was_unknown_is_accepted(
    svc: Services, storage_requests: Counter
) -> None:
    fresh = record("sub-new", "new-state")
    item = {"subscriptionId": "sub-new", "clientState": "new-state"}
    assert json.loads(post(svc, [item, *unknown_items(10)]).body) == {"accepted": 0}
    svc.subscriptions.save(fresh)  # created by this process: accepted at once
    assert json.loads(post(svc, [item, *unknown_items(10)]).body) == {"accepted": 1}


def test_another_instance_s_subscription_is_accepted_within_the_unknown_ttl(
    settings_env: dict[str, str], svc: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = {"subscriptionId": "sub-other", "clientState": "other-state"}
    assert json.loads(post(svc, [item]).body) == {"accepted": 0}
    new_services(settings_env).subscriptions.save(record("sub-other", "other-state"))
    # Remembered as unknown on this instance for UNKNOWN_TTL at most.
    assert json.loads(post(svc, [item]).body) == {"accepted": 0}
    monkeypatch.setattr(NotificationGate, "UNKNOWN_TTL", 0.0)
    monkeypatch.setattr(NotificationGate, "LISTING_AGE", 0.0)
    assert json.loads(post(svc, [item]).body) == {"accepted": 1}


def test_overlong_ids_are_never_looked_up(svc: Services, storage_requests: Counter) -> None:
    storage_requests.reset()
    items = [{"subscriptionId": f"{n:04d}" + "x" * 200, "clientState": "c"} for n in range(500)]
    assert json.loads(post(svc, items).body) == {"accepted": 0}
    assert storage_requests.count == 0
