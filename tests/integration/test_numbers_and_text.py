"""Integers past 32 bits and text that is not proper Unicode, at every door.

A booking version may be anything up to 2^63-1 (epoch milliseconds, 64-bit row versions) and
syncs end to end; a larger one is a 400. A lone surrogate or a control character where it does
not belong is a 400 naming the field, never a 500, whether it comes in a JSON body, a header, a
route value or a query parameter; numeric query parameters take ASCII digits only.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from sandbox import Sandbox
from sandbox.platform import PlatformSim
from sync_core import api
from sync_core.config import StorageSettings
from sync_core.domain.booking import BookingEvent
from sync_core.problems import ValidationFailed
from sync_core.store.records import BookingStates
from sync_core.store.tables import TableStore
from sync_core.validation import (
    MAX_VERSION,
    is_proper_text,
    parse_count,
    parse_model,
    proper_json,
)
from sync_core.web import PROBLEM_JSON, Request, Response, json_response, serve
from tests.conftest import ROOM_A, LocalHost, control_booking, wait
from tests.e2e.test_bookings import ours, synced


def problem(response: Response) -> dict[str, Any]:
    assert response.headers["Content-Type"] == PROBLEM_JSON
    body: dict[str, Any] = json.loads(response.body)
    assert body["status"] == response.status
    return body


def fields(response: Response) -> list[str]:
    return [e["field"] for e in problem(response).get("errors", [])]


# -- the checks themselves ------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["\ud800", "a\udfff", "\ud83d", "x\udc80y", "\ud83d\ude00"])
def test_lone_surrogates_are_not_proper_text(text: str) -> None:
    assert not is_proper_text(text)
    assert is_proper_text("Grüße 😀 line\nbreak")


def test_every_string_of_decoded_json_is_checked_keys_included() -> None:
    assert proper_json({"a": ["b", {"c": 1}]}) == {"a": ["b", {"c": 1}]}
    for bad in ({"\ud800": 1}, {"a": [1, {"b": "\udfff"}]}, ["ok", "\ud83d"]):
        with pytest.raises(ValidationFailed):
            proper_json(bad)
    nested: Any = "\ud800"
    for _ in range(50_000):  # deeper than any recursion limit: the walk is iterative
        nested = [nested]
    with pytest.raises(ValidationFailed):
        proper_json(nested)


@pytest.mark.parametrize(
    "text",
    ["²", "¹²", "١٢", "\U0001d7d9", "①", "-1", "+5", " 5", "5 ", "5.0", "1e3", "0x10", "5_0", "",
     "0", "1001", "9" * 30, "\ud800"],
)  # fmt: skip
def test_counts_are_ascii_digits_in_range(text: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_count("limit", text, minimum=1, maximum=1000)
    assert caught.value.errors[0].field == "limit"


def test_counts_in_range_are_read() -> None:
    assert [parse_count("limit", t, minimum=1, maximum=1000) for t in ("1", "050", "1000")] == [
        1,
        50,
        1000,
    ]


# -- at the HTTP edge -----------------------------------------------------------------------------


def echo_json(request: Request) -> Response:
    return json_response(200, request.json())


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": "\\ud800"}',
        b'{"\\udfff": 1}',
        b'{"a": ["x", {"b": "\\ud83d"}]}',
        b'{"a": "\xed\xa0\x80"}',  # a surrogate as UTF-8 bytes: json.loads lets it through
    ],
)
def test_a_json_body_with_a_lone_surrogate_is_a_400(body: bytes) -> None:
    answer = serve(echo_json, Request("POST", body=body))
    assert answer.status == 400
    assert fields(answer) == ["body"]


def test_a_json_body_with_paired_surrogates_and_controls_is_read() -> None:
    answer = serve(echo_json, Request("POST", body=b'{"a": "\\ud83d\\ude00 line\\nbreak"}'))
    assert answer.status == 200
    assert json.loads(answer.body) == {"a": "😀 line\nbreak"}


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (Request("GET", query={"limit": "\ud800"}), "limit"),
        (Request("GET", query={"\ud800": "1"}), "query"),
        (Request("GET", headers={"if-match": 'W/"\udfff"'}), "if-match"),
        (Request("GET", headers={"webhook-id": "msg_\ud800"}), "webhook-id"),
        (Request("GET", route={"resource_id": "room-\ud800"}), "resource_id"),
        (Request("GET", url="http://x/api/admin/mappings/\ud800"), "url"),
    ],
)
def test_headers_routes_and_queries_with_a_lone_surrogate_are_a_400(
    request_: Request, field: str
) -> None:
    def never(request: Request) -> Response:
        raise AssertionError("the handler must not see a lone surrogate")

    answer = serve(never, request_)
    assert answer.status == 400
    assert fields(answer) == [field]


@pytest.mark.parametrize("limit", ["²", "١٢", "0", "1001", "-5", "99999999999999999999999", "1.5"])
@pytest.mark.parametrize("handler", [api.list_mappings, api.history])
def test_admin_limit_is_a_field_error(
    monkeypatch: pytest.MonkeyPatch, handler: Any, limit: str
) -> None:
    monkeypatch.setattr(api, "services", lambda: SimpleNamespace(mappings=None))
    answer = serve(handler, Request("GET", query={"limit": limit}))
    assert answer.status == 400
    assert fields(answer) == ["limit"]


@pytest.mark.parametrize("receive", [api.graph_notifications, api.graph_lifecycle])
def test_the_validation_echo_is_never_sniffed(receive: Any) -> None:
    token = "<html><script>alert(1)</script>"
    answer = serve(receive, Request("POST", query={"validationToken": token}))
    assert answer.status == 200
    assert answer.body == token.encode()
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


# -- booking versions ---------------------------------------------------------------------------


def booking_body(**data: Any) -> dict[str, Any]:
    base = {
        "id": "bk_1",
        "version": 1,
        "resource_id": "room-42",
        "start": "2030-01-01T09:00:00+01:00",
        "end": "2030-01-01T10:00:00+01:00",
    }
    return {"type": "booking.created", "timestamp": "2026-01-01T00:00:00Z", "data": base | data}


@pytest.mark.parametrize("version", [1, 2**31, 2**53 + 1, MAX_VERSION])
def test_versions_up_to_2_63_minus_1_are_valid(version: int) -> None:
    assert parse_model(BookingEvent, booking_body(version=version)).data.version == version


@pytest.mark.parametrize("version", [0, -1, 2**63, 2**64, 10**30, 1.0, True, "7"])
def test_other_versions_are_a_field_error(version: Any) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_model(BookingEvent, booking_body(version=version))
    assert [e.field for e in caught.value.errors] == ["data.version"]


@pytest.mark.parametrize("field", ["id", "resource_id"])
@pytest.mark.parametrize("text", ["bk_\ud800", "\udfff", "bk\x00", "bk\x1b"])
def test_booking_ids_with_surrogates_or_controls_are_a_field_error(field: str, text: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_model(BookingEvent, booking_body(**{field: text}))
    assert [e.field for e in caught.value.errors] == [f"data.{field}"]


def test_a_booking_with_a_64_bit_version_syncs_end_to_end(
    stack: tuple[LocalHost, PlatformSim, Sandbox], storage: str
) -> None:
    """Versions past Int32 and double precision reach the calendar and the platform exactly;
    one past Int64 is a 400 that writes nothing."""
    host, platform, tenant = stack
    first = 2**53 + 1  # past what a double holds exactly
    event = platform.booking_event(resource_id="room-42", version=first)
    booking_id = event["data"]["id"]
    assert platform.send_booking(event).status_code == 202
    synced(platform, booking_id, first)
    wait(lambda: ours(tenant, ROOM_A, booking_id), what="the event")

    last = platform.booking_event(
        resource_id="room-42", id=booking_id, version=MAX_VERSION, title="Largest"
    )
    assert platform.send_booking(last).status_code == 202
    synced(platform, booking_id, MAX_VERSION)
    assert [e["subject"] for e in ours(tenant, ROOM_A, booking_id)] == ["Largest"]

    stale = platform.booking_event(
        resource_id="room-42", id=booking_id, version=first + 1, title="Stale"
    )
    assert platform.send_booking(stale).status_code == 202
    too_large = platform.booking_event(resource_id="room-42", id=booking_id, version=2**63)
    answer = platform.send_booking(too_large)
    assert answer.status_code == 400
    assert [e["field"] for e in answer.json()["errors"]] == ["data.version"]

    control_booking(host, platform)  # the stale one's apply has run by now
    states = BookingStates(TableStore.from_settings(StorageSettings(connection_string=storage)))
    stored = states.get(booking_id)
    assert stored is not None and stored.version == MAX_VERSION
    assert stored.event["data"]["title"] == "Largest"
    assert [e["subject"] for e in ours(tenant, ROOM_A, booking_id)] == ["Largest"]
