"""The simulated booking platform (sandbox.platform): receiving, sending, views."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from sandbox.platform import PlatformSim
from sync_core.webhooks import SignatureError, new_message_id, sign, verify

PLATFORM_SECRET = "whsec_" + base64.b64encode(b"p" * 32).decode()
BOOKING_SECRET = "whsec_" + base64.b64encode(b"b" * 32).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"x" * 32).decode()
FUNCTION_KEY = "test-function-key"


class Product:
    """A tiny stand-in for the product's booking endpoint: verifies and records."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        product = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = dict(self.headers.items())
                try:
                    msg_id: str | None = verify([BOOKING_SECRET], headers, body)
                    status, reason = 202, ""
                except SignatureError as error:
                    msg_id, status, reason = None, 401, error.reason
                product.requests.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in headers.items()},
                        "body": body,
                        "verified_id": msg_id,
                        "reason": reason,
                    }
                )
                answer = json.dumps({"status": "accepted" if status == 202 else reason}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def product() -> Iterator[Product]:
    server = Product()
    yield server
    server.stop()


@pytest.fixture
def sim(product: Product) -> Iterator[PlatformSim]:
    platform = PlatformSim(
        platform_secret=PLATFORM_SECRET,
        booking_secret=BOOKING_SECRET,
        product_url=product.url + "/",
        function_key=FUNCTION_KEY,
    ).start()
    yield platform
    platform.stop()


def blocker(sequence: int = 1, **overrides: Any) -> dict[str, Any]:
    data = {
        "id": "blk_1",
        "resource_id": "room-42",
        "start": "2026-11-23T08:00:00Z",
        "end": "2026-11-23T09:00:00Z",
        "all_day": False,
        "show_as": "busy",
        "title": "Dentist",
        "source": {"mailbox": "room@contoso.example", "event_id": "AAMk", "ical_uid": "040000"},
        "sequence": sequence,
    }
    data.update(overrides)
    return {"type": "blocker.upserted", "timestamp": "2026-11-22T10:00:00Z", "data": data}


def deliver(
    sim: PlatformSim,
    event: dict[str, Any] | bytes,
    *,
    msg_id: str | None = None,
    secret: str = PLATFORM_SECRET,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    """What the product does: POST a signed event to the platform's webhook URL."""
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    signed = sign(secret, msg_id or new_message_id(), int(time.time()), body)
    signed["content-type"] = "application/json"
    signed.update(headers or {})
    return requests.post(sim.webhook_url, data=body, headers=signed, timeout=5)


def test_signed_delivery_is_recorded(sim: PlatformSim) -> None:
    assert sim.webhook_url == sim.url + "/webhooks/calendar-sync"
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", sim.url)
    answer = deliver(sim, blocker(), msg_id="msg_a")
    assert answer.status_code == 204
    [record] = sim.received()
    assert record["id"] == "msg_a"
    assert record["type"] == "blocker.upserted"
    assert record["timestamp"] == "2026-11-22T10:00:00Z"
    assert record["data"] == blocker()["data"]
    assert record["duplicates"] == 0
    assert record["problems"] == []
    received_at = datetime.fromisoformat(record["received_at"])
    assert abs(datetime.now(UTC) - received_at) < timedelta(seconds=10)
    assert sim.rejected() == []


def test_received_filters_by_type_and_keeps_order(sim: PlatformSim) -> None:
    deleted = {
        "type": "blocker.deleted",
        "timestamp": "2026-11-22T10:00:01Z",
        "data": {"id": "blk_1", "resource_id": "room-42", "sequence": 2},
    }
    for event in (blocker(1), deleted, blocker(3)):
        assert deliver(sim, event).status_code == 204
    assert [r["data"]["sequence"] for r in sim.received()] == [1, 2, 3]
    assert [r["data"]["sequence"] for r in sim.received("blocker.upserted")] == [1, 3]
    assert [r["type"] for r in sim.received("blocker.deleted")] == ["blocker.deleted"]
    assert all(r["problems"] == [] for r in sim.received())


def test_received_returns_copies(sim: PlatformSim) -> None:
    deliver(sim, blocker())
    sim.received()[0]["data"]["title"] = "changed"
    assert sim.received()[0]["data"]["title"] == "Dentist"


def test_wrong_signature_is_401_and_rejected(sim: PlatformSim) -> None:
    answer = deliver(sim, blocker(), msg_id="msg_bad", secret=OTHER_SECRET)
    assert answer.status_code == 401
    assert answer.json() == {"error": "no signature matched"}
    assert sim.received() == []
    [rejected] = sim.rejected()
    assert rejected["id"] == "msg_bad"
    assert rejected["status"] == 401
    assert rejected["reason"] == "no signature matched"


def test_unsigned_and_stale_deliveries_are_rejected(sim: PlatformSim) -> None:
    body = json.dumps(blocker()).encode()
    unsigned = requests.post(sim.webhook_url, data=body, timeout=5)
    assert unsigned.status_code == 401
    stale = sign(PLATFORM_SECRET, "msg_old", int(time.time()) - 3600, body)
    assert requests.post(sim.webhook_url, data=body, headers=stale, timeout=5).status_code == 401
    reasons = [r["reason"] for r in sim.rejected()]
    assert reasons == ["missing webhook-id header", "timestamp outside the tolerance"]
    assert sim.received() == []


def test_signed_but_not_json_is_400(sim: PlatformSim) -> None:
    assert deliver(sim, b"not json").status_code == 400
    assert deliver(sim, b"[1, 2]").status_code == 400
    assert [r["reason"] for r in sim.rejected()] == [
        "body is not JSON",
        "body is not a JSON object",
    ]
    assert {r["status"] for r in sim.rejected()} == {400}
    assert sim.received() == []


def test_fail_next_answers_then_succeeds_on_retry(sim: PlatformSim) -> None:
    sim.fail_next(2, status=503)
    event = blocker()
    statuses = [deliver(sim, event, msg_id="msg_retry").status_code for _ in range(3)]
    assert statuses == [503, 503, 204]
    [record] = sim.received()
    assert record["id"] == "msg_retry"
    assert record["duplicates"] == 0
    assert [(f["id"], f["status"]) for f in sim.failed()] == [("msg_retry", 503)] * 2
    assert deliver(sim, blocker(2)).status_code == 204  # the failures are used up


def test_fail_next_defaults_to_500(sim: PlatformSim) -> None:
    sim.fail_next(1)
    assert deliver(sim, blocker()).status_code == 500
    assert deliver(sim, blocker()).status_code == 204


def test_duplicates_are_recorded_once_and_counted(sim: PlatformSim) -> None:
    for _ in range(3):
        assert deliver(sim, blocker(), msg_id="msg_dup").status_code == 204
    assert deliver(sim, blocker(), msg_id="msg_other").status_code == 204
    records = sim.received()
    assert [(r["id"], r["duplicates"]) for r in records] == [("msg_dup", 2), ("msg_other", 0)]


def test_problems_list_departures_from_the_spec(sim: PlatformSim) -> None:
    event = blocker()
    del event["data"]["sequence"]
    event["timestamp"] = "yesterday"
    deliver(sim, event, headers={"content-type": "text/plain"})
    deliver(sim, {"type": "booking.exploded", "timestamp": "2026-11-22T10:00:00Z", "data": {}})
    first, second = sim.received()
    assert set(first["problems"]) == {
        "content-type is not application/json",
        "timestamp is not RFC 3339 with offset",
        "data.sequence is missing",
    }
    assert second["problems"] == ["unknown type 'booking.exploded'"]


def test_clear_forgets_everything(sim: PlatformSim) -> None:
    deliver(sim, blocker())
    deliver(sim, blocker(), secret=OTHER_SECRET)
    sim.fail_next(5)
    sim.clear()
    assert (sim.received(), sim.rejected(), sim.failed()) == ([], [], [])
    assert deliver(sim, blocker()).status_code == 204  # pending failures were dropped too


def test_wait_for_returns_once_the_predicate_holds(sim: PlatformSim) -> None:
    timer = threading.Timer(0.2, lambda: deliver(sim, blocker(7)))
    timer.start()
    try:
        records = sim.wait_for(lambda got: any(r["data"]["sequence"] == 7 for r in got), 5)
    finally:
        timer.join()
    assert [r["data"]["sequence"] for r in records] == [7]


def test_wait_for_times_out_listing_what_arrived(sim: PlatformSim) -> None:
    deliver(sim, blocker(), msg_id="msg_seen")
    started = time.monotonic()
    with pytest.raises(TimeoutError) as excinfo:
        sim.wait_for(lambda got: len(got) >= 2, timeout=0.2)
    assert time.monotonic() - started < 2
    assert "blocker.upserted msg_seen" in str(excinfo.value)


def test_send_booking_is_signed_for_the_product(sim: PlatformSim, product: Product) -> None:
    event = sim.booking_event(resource_id="room-7")
    answer = sim.send_booking(event, webhook_id="msg_book_1")
    assert answer.status_code == 202
    [request] = product.requests
    assert request["path"] == "/api/bookings/events"
    assert request["verified_id"] == "msg_book_1"
    assert request["headers"]["x-functions-key"] == FUNCTION_KEY
    assert request["headers"]["content-type"] == "application/json"
    assert abs(int(request["headers"]["webhook-timestamp"]) - time.time()) < 60
    assert json.loads(request["body"]) == event


def test_send_booking_options(sim: PlatformSim, product: Product) -> None:
    event = sim.booking_event()
    fresh = sim.send_booking(event)
    stale = sim.send_booking(event, timestamp=int(time.time()) - 3600)
    wrong = sim.send_booking(event, secret=OTHER_SECRET)
    raw = sim.send_booking(b"{not json", extra_headers={"x-functions-key": "override"})
    assert [fresh.status_code, stale.status_code, wrong.status_code, raw.status_code] == [
        202,
        401,
        401,
        202,
    ]
    first, second, third, fourth = product.requests
    assert re.fullmatch(r"msg_[A-Za-z0-9_-]+", first["verified_id"])
    assert second["reason"] == "timestamp outside the tolerance"
    assert third["reason"] == "no signature matched"
    assert fourth["body"] == b"{not json"
    assert fourth["headers"]["x-functions-key"] == "override"
    assert first["headers"]["webhook-id"] != fourth["headers"]["webhook-id"]


def test_send_booking_without_function_key_sends_none(product: Product) -> None:
    with PlatformSim(
        platform_secret=PLATFORM_SECRET, booking_secret=BOOKING_SECRET, product_url=product.url
    ) as platform:
        assert platform.send_booking(platform.booking_event()).status_code == 202
    assert "x-functions-key" not in product.requests[0]["headers"]


def test_send_booking_needs_a_product_url() -> None:
    platform = PlatformSim(platform_secret=PLATFORM_SECRET, booking_secret=BOOKING_SECRET)
    with pytest.raises(RuntimeError, match="product_url"):
        platform.send_booking(platform.booking_event())
    with pytest.raises(RuntimeError, match="not running"):
        _ = platform.url


def test_invalid_secret_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="base64") as excinfo:
        PlatformSim(platform_secret="whsec_not base64!", booking_secret=BOOKING_SECRET)
    assert "not base64!" not in str(excinfo.value)


RFC3339_WITH_OFFSET = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?[+-]\d{2}:\d{2}")


def test_booking_event_satisfies_the_spec(sim: PlatformSim) -> None:
    event = sim.booking_event()
    assert set(event) == {"type", "timestamp", "data"}
    assert event["type"] == "booking.created"
    assert datetime.fromisoformat(event["timestamp"]).utcoffset() == timedelta(0)
    data = event["data"]
    assert re.fullmatch(r"bk_\w+", data["id"])
    assert isinstance(data["version"], int) and data["version"] >= 1
    assert data["status"] == "confirmed"
    assert data["all_day"] is False
    assert data["time_zone"] == "Europe/Berlin"
    assert RFC3339_WITH_OFFSET.fullmatch(data["start"])
    assert RFC3339_WITH_OFFSET.fullmatch(data["end"])
    start = datetime.fromisoformat(data["start"])
    end = datetime.fromisoformat(data["end"])
    assert end > start
    assert end - start == timedelta(minutes=90)
    berlin = ZoneInfo("Europe/Berlin")
    assert start.utcoffset() == start.astimezone(berlin).utcoffset()
    assert start.astimezone(berlin).hour == 9
    assert start.date() == datetime.now(berlin).date() + timedelta(days=1)
    for field in ("resource_id", "title", "notes"):
        assert isinstance(data[field], str) and data[field]
    assert data["organizer"]["email"].endswith("@contoso.example")
    assert isinstance(data["guests"], list)
    assert data["private"] is False and data["online_meeting"] is False


def test_booking_event_overrides_and_unique_ids(sim: PlatformSim) -> None:
    moved = sim.booking_event("booking.updated", version=8, resource_id="room-7", private=True)
    assert moved["type"] == "booking.updated"
    assert (moved["data"]["version"], moved["data"]["resource_id"]) == (8, "room-7")
    assert moved["data"]["private"] is True
    assert sim.booking_event("booking.cancelled")["data"]["status"] == "cancelled"
    assert sim.booking_event()["data"]["id"] != sim.booking_event()["data"]["id"]


def test_html_view_escapes_everything(sim: PlatformSim) -> None:
    deliver(sim, blocker(title="<script>alert(1)</script>"))
    deliver(sim, blocker(), msg_id="<img/src=x>", secret=OTHER_SECRET)
    page = requests.get(sim.url + "/", timeout=5)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<script" not in page.text
    assert "&lt;img/src=x&gt;" in page.text
    assert "<img" not in page.text


def test_json_view_lists_received_and_rejected(sim: PlatformSim) -> None:
    deliver(sim, blocker(), msg_id="msg_ok")
    deliver(sim, blocker(), secret=OTHER_SECRET)
    view = requests.get(sim.url + "/_platform/received", timeout=5)
    assert view.status_code == 200
    payload = view.json()
    assert [r["id"] for r in payload["received"]] == ["msg_ok"]
    assert [r["reason"] for r in payload["rejected"]] == ["no signature matched"]
    assert requests.get(sim.url + "/nope", timeout=5).status_code == 404


def test_send_booking_over_http(sim: PlatformSim, product: Product) -> None:
    answer = requests.post(
        sim.url + "/_platform/send-booking", json={"resource_id": "room-9"}, timeout=5
    )
    assert answer.status_code == 200
    assert answer.json()["product_status"] == 202
    full = sim.booking_event("booking.deleted")
    assert requests.post(sim.url + "/_platform/send-booking", json=full, timeout=5).ok
    first, second = (json.loads(r["body"]) for r in product.requests)
    assert first["data"]["resource_id"] == "room-9"
    assert first["type"] == "booking.created"
    assert second == full
    assert all(r["verified_id"] for r in product.requests)
    bad = requests.post(sim.url + "/_platform/send-booking", data=b"nope", timeout=5)
    assert bad.status_code == 400


def test_keep_alive_connections_serve_several_deliveries(sim: PlatformSim) -> None:
    """The product may reuse one connection (requests.Session); 204s must not break it."""
    sim.fail_next(1, status=502)
    with requests.Session() as session:
        statuses = []
        for sequence in (1, 2, 3):
            body = json.dumps(blocker(sequence)).encode()
            headers = sign(PLATFORM_SECRET, f"msg_ka{sequence}", int(time.time()), body)
            headers["content-type"] = "application/json"
            answer = session.post(sim.webhook_url, data=body, headers=headers, timeout=5)
            statuses.append(answer.status_code)
    assert statuses == [502, 204, 204]
    assert [r["id"] for r in sim.received()] == ["msg_ka2", "msg_ka3"]
