"""POST /api/bookings/events: the exact answers of SPEC §3.2, and nothing written on any 4xx."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from sandbox.platform import PlatformSim
from tests.conftest import LocalHost

SECOND_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def platform(settings_env: dict[str, str]) -> Iterator[PlatformSim]:
    sim = PlatformSim(
        platform_secret=settings_env["PLATFORM_WEBHOOK_SECRET"],
        booking_secret=settings_env["BOOKING_WEBHOOK_SECRET"],
        function_key="test-function-key",
    ).start()
    yield sim
    sim.stop()


@pytest.fixture
def product(function_host: LocalHost, platform: PlatformSim) -> PlatformSim:
    platform.product_url = function_host.base
    function_host.map("room-42", "room.berlin@contoso.example", privacy=None)
    return platform


def stored(storage: str, table: str) -> list[dict[str, Any]]:
    service = TableServiceClient.from_connection_string(storage)
    if table not in {t.name for t in service.list_tables()}:
        return []
    return list(service.get_table_client(table).list_entities())


def assert_nothing_written(storage: str) -> None:
    assert stored(storage, "bookings") == []
    assert stored(storage, "openwork") == []


def test_accepted_then_duplicate(product: PlatformSim, storage: str) -> None:
    event = product.booking_event()
    first = product.send_booking(event, webhook_id="msg_one")
    assert first.status_code == 202
    assert first.json() == {"status": "accepted"}
    assert [e["BookingId"] for e in stored(storage, "bookings")] == [event["data"]["id"]]
    again = product.send_booking(event, webhook_id="msg_one")
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate"}


def test_unmapped_resource_is_ignored(product: PlatformSim, storage: str) -> None:
    answer = product.send_booking(product.booking_event(resource_id="room-unknown"))
    assert answer.status_code == 200
    assert answer.json() == {"status": "ignored", "reason": "resource not mapped"}
    assert stored(storage, "bookings") == []


def test_rotated_secret_with_several_signatures(
    product: PlatformSim, function_host: LocalHost
) -> None:
    from sync_core.webhooks import sign

    event = product.booking_event()
    body = json.dumps(event).encode()
    now = int(time.time())
    old = sign(SECOND_SECRET, "msg_rot", now, body)["webhook-signature"]
    new = sign(product.booking_secret, "msg_rot", now, body)["webhook-signature"]
    answer = product.send_booking(
        body,
        webhook_id="msg_rot",
        timestamp=now,
        extra_headers={"webhook-signature": f"{old} {new}"},
    )
    assert answer.status_code == 202


@pytest.mark.parametrize(
    "case",
    ["unsigned", "wrong secret", "tampered", "stale", "future", "no id"],
)
def test_bad_signatures_get_401(product: PlatformSim, storage: str, case: str) -> None:
    event = product.booking_event()
    if case == "unsigned":
        answer = product.send_booking(event, extra_headers={"webhook-signature": ""})
    elif case == "wrong secret":
        answer = product.send_booking(event, secret=SECOND_SECRET)
    elif case == "tampered":
        from sync_core.webhooks import sign

        body = json.dumps(event).encode()
        headers = sign(product.booking_secret, "msg_t", int(time.time()), body)
        tampered = body.replace(b"Sprint review", b"Sprint revieW")
        answer = product.send_booking(tampered, webhook_id="msg_t", extra_headers=headers)
    elif case == "stale":
        answer = product.send_booking(event, timestamp=int(time.time()) - 6 * 60)
    elif case == "future":
        answer = product.send_booking(event, timestamp=int(time.time()) + 6 * 60)
    else:
        answer = product.send_booking(event, extra_headers={"webhook-id": ""})
    assert answer.status_code == 401
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert_nothing_written(storage)


def test_malformed_json_and_schema_violations_get_400(product: PlatformSim, storage: str) -> None:
    broken = product.send_booking(b'{"type": "booking.created", ')
    assert broken.status_code == 400
    event = product.booking_event(version=-1, start="yesterday", guests=[{"email": "x"}])
    event["type"] = "booking.renamed"
    invalid = product.send_booking(event)
    assert invalid.status_code == 400
    fields = {e["field"] for e in invalid.json()["errors"]}
    assert {"type", "data.version", "data.start", "data.guests.0.email"} <= fields
    assert_nothing_written(storage)


def test_oversized_body_gets_413(product: PlatformSim, storage: str) -> None:
    event = product.booking_event(notes="x" * (300 * 1024))
    assert product.send_booking(event).status_code == 413
    assert_nothing_written(storage)


def test_function_key_is_required(product: PlatformSim, storage: str) -> None:
    answer = product.send_booking(product.booking_event(), extra_headers={"x-functions-key": "no"})
    assert answer.status_code == 401
    assert_nothing_written(storage)
