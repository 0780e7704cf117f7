"""Microsoft's own Python client (msgraph-sdk: kiota, httpx, azure-identity) against the sandbox.

Our Graph client is hand-written, so the sandbox could drift into accepting only what we send.
These tests drive it with `GraphServiceClient` over real HTTPS, with the SDK's default middleware,
so the URLs, casts, function calls, headers and bodies are exactly what Microsoft's client sends
(`delta()` with parentheses, `places/graph.room`, `@odata.type` in bodies, ISO offsets).
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from sandbox import Sandbox
from tests.sandbox.conftest import PERSON, ROOM, ROOM2, Receiver
from tests.sandbox.sdk_client import sdk_client

# Request builder modules warn about their own classes on import and on use
# (microsoftgraph/msgraph-sdk-python#812); nothing for a caller to change.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
    from msgraph.generated.models.event import Event
    from msgraph.generated.models.item_body import ItemBody
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError
    from msgraph.generated.models.single_value_legacy_extended_property import (
        SingleValueLegacyExtendedProperty,
    )
    from msgraph.generated.models.subscription import Subscription
    from msgraph.generated.places.graph_room.graph_room_request_builder import (
        GraphRoomRequestBuilder,
    )
    from msgraph.generated.users.item.calendar_view.delta.delta_request_builder import (
        DeltaRequestBuilder,
    )
    from msgraph.generated.users.item.events.events_request_builder import EventsRequestBuilder
    from msgraph.graph_service_client import GraphServiceClient

PROP = "String {5b7d2f5e-3c1a-4f8e-9d2b-6a4c8e0f1b37} Name BookingId"
ROOM_IN_PATH = ROOM.replace("@", "%40")  # the SDK percent-encodes path parameters
WINDOWS_ZONE = "W. Europe Standard Time"
T = TypeVar("T")

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning:msgraph.*", "ignore::DeprecationWarning:kiota_abstractions.*"
)


def run(
    sb: Sandbox,
    scenario: Callable[[GraphServiceClient], Awaitable[T]],
    sent: list[str] | None = None,
    scope: str | None = None,
) -> T:
    """Run one async scenario with a fresh SDK client in its own event loop; `sent` collects
    "METHOD /path?query" of each request exactly as it went on the wire."""

    async def main() -> T:
        async with sdk_client(sb, sent, scope) as client:
            return await scenario(client)

    return asyncio.run(main())


def when(value: str, zone: str = "UTC") -> DateTimeTimeZone:
    return DateTimeTimeZone(date_time=value, time_zone=zone)


def booking(subject: str, day: str, zone: str = WINDOWS_ZONE, **extra: Any) -> Event:
    return Event(
        subject=subject,
        body=ItemBody(content=f"{subject} (booked on the platform)"),
        start=when(f"{day}T09:00:00", zone),
        end=when(f"{day}T10:00:00", zone),
        **extra,
    )


def code_of(error: ODataError) -> str | None:
    return error.error.code if error.error else None


def utc_prefer() -> RequestConfiguration[Any]:
    config: RequestConfiguration[Any] = RequestConfiguration()
    config.headers.add("Prefer", 'outlook.timezone="UTC"')
    return config


# -- 1. events: create, read by id two ways, patch, filter + expand, delete ---------------------


def test_event_lifecycle_with_an_extended_property_and_a_transaction_id(sb: Sandbox) -> None:
    async def scenario(client: GraphServiceClient) -> None:
        room = client.users.by_user_id(ROOM)
        created = await room.calendar.events.post(
            booking(
                "Board meeting",
                "2030-01-07",
                transaction_id="bk_42-v1",
                single_value_extended_properties=[
                    SingleValueLegacyExtendedProperty(id=PROP, value="bk_42")
                ],
            )
        )
        assert created is not None and created.id
        assert created.transaction_id == "bk_42-v1"
        assert created.start is not None
        assert (created.start.date_time, created.start.time_zone) == (
            "2030-01-07T08:00:00.0000000",
            "UTC",
        )
        assert created.original_start_time_zone == WINDOWS_ZONE
        stored = sb.control.event(ROOM, created.id)["raw"]
        assert stored["createdBy"] == f"app:{sb.client_id}"
        assert (stored["start"], stored["startTimeZone"]) == ("2030-01-07T08:00:00Z", WINDOWS_ZONE)
        assert stored["transactionId"] == "bk_42-v1"
        assert stored["singleValueExtendedProperties"] == [{"id": PROP, "value": "bk_42"}]

        via_calendar = await room.calendar.events.by_event_id(created.id).get()
        via_events = await room.events.by_event_id(created.id).get()
        assert via_calendar is not None and via_events is not None
        assert via_calendar.id == via_events.id == created.id
        assert via_calendar.change_key == via_events.change_key == created.change_key

        patched = await room.events.by_event_id(created.id).patch(Event(subject="Board meeting 2"))
        assert patched is not None
        assert patched.subject == "Board meeting 2"
        assert patched.change_key != created.change_key

        query = EventsRequestBuilder.EventsRequestBuilderGetQueryParameters(
            filter=f"singleValueExtendedProperties/any(ep: ep/id eq '{PROP}' and ep/value eq "
            "'bk_42')",
            expand=[f"singleValueExtendedProperties($filter=id eq '{PROP}')"],
        )
        found = await room.events.get(RequestConfiguration(query_parameters=query))
        assert found is not None and found.value is not None
        assert [e.id for e in found.value] == [created.id]
        props = found.value[0].single_value_extended_properties or []
        assert [(p.id, p.value) for p in props] == [(PROP, "bk_42")]

        await room.events.by_event_id(created.id).delete()
        # Gone from the calendar (the mailbox-wide /events/{id} still finds it in Deleted Items).
        with pytest.raises(ODataError) as gone:
            await room.calendar.events.by_event_id(created.id).get()
        assert gone.value.response_status_code == 404
        assert code_of(gone.value) == "ErrorItemNotFound"

    sent: list[str] = []
    run(sb, scenario, sent)
    assert sb.control.events(ROOM) == []
    assert sent[0] == f"POST /v1.0/users/{ROOM_IN_PATH}/calendar/events"
    assert sent[1].startswith(f"GET /v1.0/users/{ROOM_IN_PATH}/calendar/events/AAMkAD")
    assert sent[4].startswith(
        f"GET /v1.0/users/{ROOM_IN_PATH}/events?$expand=singleValueExtendedProperties%28%24filter"
    )


# -- 2. a zone Graph refuses --------------------------------------------------------------------


def test_a_zone_graph_refuses_raises_odata_error(sb: Sandbox) -> None:
    async def scenario(client: GraphServiceClient) -> ODataError:
        with pytest.raises(ODataError) as refused:
            await client.users.by_user_id(ROOM).events.post(
                booking("Vienna", "2030-01-07", zone="Europe/Vienna")
            )
        return refused.value

    # Graph's own scope works as well as the sandbox origin's.
    error = run(sb, scenario, scope="https://graph.microsoft.com/.default")
    assert error.response_status_code == 400
    assert code_of(error) == "TimeZoneNotSupportedException"
    assert sb.control.events(ROOM) == []


# -- 3. all-day events --------------------------------------------------------------------------


def test_an_all_day_event_reads_back_midnight_to_midnight_in_utc(sb: Sandbox) -> None:
    async def scenario(client: GraphServiceClient) -> Event | None:
        room = client.users.by_user_id(ROOM)
        created = await room.events.post(
            Event(
                subject="Closed for inventory",
                is_all_day=True,
                start=when("2030-01-07T00:00:00", WINDOWS_ZONE),
                end=when("2030-01-09T00:00:00", WINDOWS_ZONE),
            )
        )
        assert created is not None and created.id
        return await room.events.by_event_id(created.id).get(utc_prefer())

    event = run(sb, scenario)
    assert event is not None and event.start is not None and event.end is not None
    assert event.is_all_day is True
    assert (event.start.date_time, event.start.time_zone) == ("2030-01-07T00:00:00.0000000", "UTC")
    assert (event.end.date_time, event.end.time_zone) == ("2030-01-09T00:00:00.0000000", "UTC")


# -- 4. calendarView delta ----------------------------------------------------------------------


async def delta_round(
    delta: DeltaRequestBuilder, link: str | None = None
) -> tuple[list[Event], str, int]:
    """One round, two events a page: start with the window (or from `link`), follow
    odata_next_link with `with_url` to odata_delta_link. Returns (items, deltaLink, pages)."""
    config: RequestConfiguration[Any] = RequestConfiguration()
    config.headers.add("Prefer", "odata.maxpagesize=2")
    if link is None:
        config.query_parameters = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
            start_date_time="2030-01-01T00:00:00Z", end_date_time="2030-02-01T00:00:00Z"
        )
    items: list[Event] = []
    pages = 0
    while True:
        page = await (delta if link is None else delta.with_url(link)).get(config)
        config.query_parameters = None
        assert page is not None
        items += page.value or []
        pages += 1
        if page.odata_delta_link:
            assert page.odata_next_link is None
            return items, page.odata_delta_link, pages
        assert page.odata_next_link
        link = page.odata_next_link


def test_calendar_view_delta_rounds(sb: Sandbox) -> None:
    async def scenario(client: GraphServiceClient) -> None:
        room = client.users.by_user_id(ROOM)
        ids = []
        for n in range(3):
            event = await room.events.post(booking(f"e{n}", f"2030-01-{10 + n:02d}"))
            assert event is not None and event.id
            ids.append(event.id)
        items, delta_link, pages = await delta_round(room.calendar_view.delta)
        assert pages == 2
        assert sorted(str(e.id) for e in items) == sorted(ids)
        assert all(e.odata_type == "#microsoft.graph.event" for e in items)

        await room.events.by_event_id(ids[0]).patch(Event(subject="e0 moved on"))
        sb.control.delete_event(ROOM, ids[1])  # a person deletes one in Outlook
        changed, _, _ = await delta_round(room.calendar_view.delta, delta_link)
        by_id = {e.id: e for e in changed}
        assert set(by_id) == {ids[0], ids[1]}
        assert by_id[ids[0]].subject == "e0 moved on"
        assert by_id[ids[1]].additional_data.get("@removed") == {"reason": "deleted"}

    sent: list[str] = []
    run(sb, scenario, sent)
    deltas = [p for p in sent if "/calendarView/delta" in p]
    assert deltas[0] == (
        f"GET /v1.0/users/{ROOM_IN_PATH}/calendarView/delta()"
        "?endDateTime=2030-02-01T00%3A00%3A00Z&startDateTime=2030-01-01T00%3A00%3A00Z"
    )
    assert "$skiptoken=" in deltas[1] and "$deltatoken=" in deltas[2]


# -- 5. places ----------------------------------------------------------------------------------


def test_rooms_and_room_lists_with_top_and_skip(sb: Sandbox) -> None:
    async def scenario(client: GraphServiceClient) -> None:
        everything = await client.places.graph_room.get()
        assert everything is not None and everything.value is not None
        addresses = [r.email_address for r in everything.value]
        assert ROOM in addresses and ROOM2 in addresses
        assert PERSON not in addresses

        query = GraphRoomRequestBuilder.GraphRoomRequestBuilderGetQueryParameters(top=2, skip=1)
        page = await client.places.graph_room.get(RequestConfiguration(query_parameters=query))
        assert page is not None and page.value is not None
        assert [r.email_address for r in page.value] == addresses[1:3]

        lists = await client.places.graph_room_list.get()
        assert lists is not None and lists.value is not None
        berlin = next(r for r in lists.value if r.email_address == "rooms.berlin@contoso.example")
        rooms = await client.places.by_place_id(
            str(berlin.email_address)
        ).graph_room_list.rooms.get()
        assert rooms is not None and rooms.value is not None
        assert ROOM in {r.email_address for r in rooms.value}

    sent: list[str] = []
    run(sb, scenario, sent)
    assert sent == [
        "GET /v1.0/places/graph.room",
        "GET /v1.0/places/graph.room?$skip=1&$top=2",
        "GET /v1.0/places/graph.roomList",
        "GET /v1.0/places/rooms.berlin%40contoso.example/graph.roomList/rooms",
    ]


# -- 6. subscriptions ---------------------------------------------------------------------------


def in_minutes(minutes: float) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


def test_subscription_create_renew_and_refusals(sb: Sandbox, receiver: Receiver) -> None:
    def subscription(expires: datetime) -> Subscription:
        return Subscription(
            change_type="created,updated,deleted",
            notification_url=f"{receiver.url}/api/graph/notifications",
            lifecycle_notification_url=f"{receiver.url}/api/graph/lifecycle",
            resource=f"users/{ROOM}/events",
            expiration_date_time=expires,
            client_state="secret-per-subscription",
        )

    limit = sb.control.settings()["max_subscription_minutes"]

    async def scenario(client: GraphServiceClient) -> tuple[str, list[ODataError]]:
        created = await client.subscriptions.post(subscription(in_minutes(60)))
        assert created is not None and created.id
        assert created.resource == f"users/{ROOM}/events"
        assert created.client_state == "secret-per-subscription"
        assert created.expiration_date_time is not None

        renewed_to = in_minutes(4000)
        renewed = await client.subscriptions.by_subscription_id(created.id).patch(
            Subscription(expiration_date_time=renewed_to)
        )
        assert renewed is not None and renewed.expiration_date_time is not None
        assert abs((renewed.expiration_date_time - renewed_to).total_seconds()) < 1

        await client.users.by_user_id(ROOM).events.post(booking("notify me", "2030-01-07"))

        errors = []
        for bad in (in_minutes(-5), in_minutes(limit + 60)):
            with pytest.raises(ODataError) as refused:
                await client.subscriptions.post(subscription(bad))
            errors.append(refused.value)
        with pytest.raises(ODataError) as too_long:
            await client.subscriptions.by_subscription_id(created.id).patch(
                Subscription(expiration_date_time=in_minutes(limit + 60))
            )
        errors.append(too_long.value)
        return created.id, errors

    subscription_id, errors = run(sb, scenario)
    assert [(e.response_status_code, code_of(e)) for e in errors] == [
        (400, "InvalidRequest"),  # in the past
        (400, "ExtensionError"),  # beyond the resource's maximum lifetime
        (400, "ExtensionError"),  # renewed too far
    ]
    assert errors[1].error is not None
    assert errors[1].error.message == (
        f"Subscription expiration can only be {limit} minutes in the future."
    )
    assert [s["id"] for s in sb.control.subscriptions()] == [subscription_id]
    assert len(receiver.validations) == 2
    receiver.wait(lambda: len(receiver.notifications("/api/graph/notifications")) >= 1)
    note = receiver.notifications("/api/graph/notifications")[0]
    assert (note["subscriptionId"], note["changeType"]) == (subscription_id, "created")


# -- 7. $batch ----------------------------------------------------------------------------------


def test_batch_through_the_sdk(sb: Sandbox) -> None:
    # msgraph-core imports `deprecated` for its batch classes without declaring it
    # (microsoftgraph/msgraph-sdk-python-core#1030); requirements-dev.txt pins it.
    from msgraph_core.requests.batch_request_content import BatchRequestContent
    from msgraph_core.requests.batch_request_item import BatchRequestItem
    from msgraph_core.requests.batch_response_content import BatchResponseContent

    async def scenario(client: GraphServiceClient) -> BatchResponseContent:
        batch = BatchRequestContent()
        read = client.users.by_user_id(ROOM).to_get_request_information()
        create = client.users.by_user_id(ROOM2).events.to_post_request_information(
            booking("batched", "2030-01-08")
        )
        batch.add_request("read", BatchRequestItem(read, id="read"))
        batch.add_request("create", BatchRequestItem(create, id="create"))
        answer = await client.batch.post(batch)
        assert isinstance(answer, BatchResponseContent)
        return answer

    sent: list[str] = []
    answer = run(sb, scenario, sent)
    assert sent == ["POST /v1.0/$batch"]
    assert answer.get_response_status_codes() == {"read": 200, "create": 201}
    created = answer.get_response_by_id("create")
    assert created is not None and created.headers is not None
    assert created.headers["Content-Type"].startswith("application/json")
    # The SDK drops JSON-object bodies of batch responses (microsoft/kiota-python#737), so the
    # result is checked in the sandbox; the inner requests ran as their own Graph requests.
    assert [e["subject"] for e in sb.control.events(ROOM2)] == ["batched"]
    inner = [r for r in sb.control.requests(kind="graph") if r["batch"]]
    assert [(r["method"], r["path"], r["status"]) for r in inner] == [
        ("GET", f"/v1.0/users/{ROOM}", 200),
        ("POST", f"/v1.0/users/{ROOM2}/events", 201),
    ]
