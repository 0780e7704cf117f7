"""The sandbox's payloads against examples from Microsoft's Graph documentation.

Each example in graph_examples/ (see SOURCES.md there) is compared by structure: the same keys,
recursively, and the same JSON value types. `exact` means the sandbox has no key the example
lacks; otherwise the example (which the docs mark as truncated) must be a subset. A null on either
side matches any type (docs and service both use null for unset values), `@odata.context` may be
added, and `{"@odata.type": "microsoft.graph.X"}` in a schema stands for "an object".
This keeps the simulator honest against the documentation, not just against our own client.
"""

from __future__ import annotations

from typing import Any

from sandbox import Sandbox
from tests.sandbox.conftest import ROOM, Graph, Receiver, event_body, example, get_token

# Known casing slips inside the documentation's own examples (see graph_examples/SOURCES.md).
DOC_KEY_ALIASES = {"geocoordinates": "geoCoordinates"}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def shape_errors(doc: Any, ours: Any, exact: bool, path: str = "$") -> list[str]:
    if doc is None or ours is None:
        return []
    if (
        isinstance(doc, dict)
        and set(doc) == {"@odata.type"}
        and str(doc["@odata.type"]).startswith("microsoft.graph.")
    ):
        return [] if isinstance(ours, dict) else [f"{path}: object expected, got {_kind(ours)}"]
    if _kind(doc) != _kind(ours):
        return [f"{path}: {_kind(doc)} expected, got {_kind(ours)}"]
    errors: list[str] = []
    if isinstance(doc, dict):
        doc = {DOC_KEY_ALIASES.get(k, k): v for k, v in doc.items()}
        missing = sorted(set(doc) - set(ours))
        extra = sorted(set(ours) - set(doc) - {"@odata.context"})
        if missing:
            errors.append(f"{path}: missing {missing}")
        if exact and extra:
            errors.append(f"{path}: not in the docs {extra}")
        for key in sorted(set(doc) & set(ours)):
            errors += shape_errors(doc[key], ours[key], exact, f"{path}.{key}")
    elif isinstance(doc, list) and doc:
        for index, item in enumerate(ours):
            template = _template(doc, item)
            errors += shape_errors(template, item, exact, f"{path}[{index}]")
    return errors


def _template(doc_items: list[Any], item: Any) -> Any:
    """The doc item to compare with: a deleted entry with a deleted one, a full one with a full."""
    if isinstance(item, dict):
        for candidate in doc_items:
            if isinstance(candidate, dict) and ("@removed" in candidate) == ("@removed" in item):
                return candidate
    return doc_items[0]


def assert_shape(doc: Any, ours: Any, exact: bool) -> None:
    errors = shape_errors(doc, ours, exact)
    assert not errors, "\n".join(errors)


def test_the_comparison_itself_catches_drift() -> None:
    doc = {"value": [{"id": "a", "n": 1, "inner": {"x": True}}]}
    assert shape_errors(doc, {"value": [{"id": "b", "n": 2, "inner": {"x": False}}]}, True) == []
    assert shape_errors(doc, {"value": [{"id": "b", "n": "2", "inner": {"x": False}}]}, True)
    assert shape_errors(doc, {"value": [{"id": "b", "inner": {"x": False}}]}, False)
    assert shape_errors(doc, {"value": [{"id": "b", "n": 1, "inner": {"x": 1}, "y": 0}]}, False)
    assert shape_errors(doc, {"value": [{"id": "b", "n": 1, "inner": {"x": True}, "y": 0}]}, True)


def test_event_matches_the_create_event_example(graph: Graph) -> None:
    # GD api-reference/v1.0/api/user-post-events.md, Response 1 (marked truncated: subset).
    created = graph.post(
        f"/users/{ROOM}/events",
        event_body(
            "Let's go brunch",
            "2030-04-15T11:00:00",
            "2030-04-15T12:00:00",
            "Pacific Standard Time",
            body={"contentType": "HTML", "content": "Does late morning work for you?"},
            location={"displayName": "Harry's Bar"},
            locations=[{"displayName": "Harry's Bar"}],
            attendees=[
                {
                    "emailAddress": {"address": "samanthab@contoso.example", "name": "Samantha"},
                    "type": "required",
                }
            ],
        ),
        headers={"Prefer": 'outlook.timezone="Pacific Standard Time"'},
    ).json()
    assert_shape(example("event_created.json"), created, exact=False)


def test_series_master_matches_the_recurring_event_example(graph: Graph) -> None:
    # GD api-reference/v1.0/api/user-post-events.md, Response 3 (recurrence read back).
    created = graph.post(
        f"/users/{ROOM}/events",
        event_body(
            "Let's go for lunch",
            "2030-09-02T12:00:00",
            "2030-09-02T14:00:00",
            "Pacific Standard Time",
            recurrence={
                "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["Monday"]},
                "range": {"type": "endDate", "startDate": "2030-09-02", "endDate": "2030-12-31"},
            },
        ),
    ).json()
    doc = example("event_series_master.json")
    assert_shape(doc["recurrence"], created["recurrence"], exact=True)
    assert created["recurrence"] == {
        **doc["recurrence"],
        "range": {**doc["recurrence"]["range"], "startDate": "2030-09-02", "endDate": "2030-12-31"},
    }


def test_delta_pages_match_the_delta_query_examples(sb: Sandbox, graph: Graph) -> None:
    # GD concepts/delta-query-events.md: "Sample initial response", "The next round" response.
    for day in (9, 10, 11):
        graph.post(
            f"/users/{ROOM}/events",
            event_body(f"e{day}", f"2030-12-{day:02d}T20:30:00", f"2030-12-{day:02d}T22:00:00"),
        )
    first = graph.get(
        f"/users/{ROOM}/calendarView/delta?startdatetime=2030-12-01T00:00:00Z"
        "&enddatetime=2030-12-30T00:00:00Z",
        headers={"Prefer": "odata.maxpagesize=2"},
    ).json()
    doc_first = example("delta_first_page.json")
    assert set(first) == set(doc_first)
    assert_shape(doc_first, first, exact=False)
    second = graph.get(first["@odata.nextLink"], headers={"Prefer": "odata.maxpagesize=2"}).json()
    victim = first["value"][0]["id"]
    graph.delete(f"/users/{ROOM}/events/{victim}")
    chapel = {
        "displayName": "Chapel of Saint Ignatius",
        "address": {
            "street": "900 Broadway",
            "city": "Seattle",
            "state": "WA",
            "countryOrRegion": "United States",
            "postalCode": "",
        },
        "coordinates": {"latitude": 47.6105, "longitude": -122.321},
    }
    graph.patch(
        f"/users/{ROOM}/events/{second['value'][0]['id']}",
        {"subject": "Attend service", "location": chapel},
    )
    next_round = graph.get(second["@odata.deltaLink"]).json()
    doc_next = example("delta_next_round.json")
    assert set(next_round) == set(doc_next)
    assert_shape(doc_next, next_round, exact=False)
    removed = [item for item in next_round["value"] if "@removed" in item]
    assert len(removed) == 1
    assert_shape(doc_next["value"][0], removed[0], exact=True)


def test_change_and_lifecycle_notifications_match_the_docs(
    sb: Sandbox, graph: Graph, receiver: Receiver
) -> None:
    # GD concepts/outlook-change-notifications-overview.md ("without resource data") and
    # GD concepts/change-notifications-lifecycle-events.md ("Structure of a lifecycle
    # notification").
    sub = graph.post(
        "/subscriptions",
        {
            "changeType": "created",
            "notificationUrl": f"{receiver.url}/n",
            "lifecycleNotificationUrl": f"{receiver.url}/l",
            "resource": f"/users/{ROOM}/events",
            "expirationDateTime": "2099-01-01T00:00:00Z",
            "clientState": "state",
        },
    )
    assert sub.status_code == 400  # too far ahead; now a valid one
    sb.control.update_settings(max_subscription_minutes=60 * 24 * 365 * 80)
    sub = graph.post(
        "/subscriptions",
        {
            "changeType": "created",
            "notificationUrl": f"{receiver.url}/n",
            "lifecycleNotificationUrl": f"{receiver.url}/l",
            "resource": f"/users/{ROOM}/events",
            "expirationDateTime": "2099-01-01T00:00:00Z",
            "clientState": "state",
        },
    )
    assert sub.status_code == 201
    # GD concepts/outlook-change-notifications-overview.md, Example 1 response.
    assert_shape(example("subscription.json"), sub.json(), exact=True)
    graph.post(
        f"/users/{ROOM}/events", event_body("x", "2030-01-07T09:00:00", "2030-01-07T10:00:00")
    )
    sb.control.send_lifecycle(sub.json()["id"], "missed")
    receiver.wait(lambda: bool(receiver.notifications("/n")) and bool(receiver.notifications("/l")))
    change = next(p["body"] for p in receiver.posts if p["path"] == "/n")
    lifecycle = next(p["body"] for p in receiver.posts if p["path"] == "/l")
    assert_shape(example("change_notification.json"), change, exact=True)
    assert_shape(example("lifecycle_notification.json"), lifecycle, exact=True)


def test_errors_and_batch_match_the_docs(sb: Sandbox, graph: Graph) -> None:
    # GD concepts/errors.md (error body) and concepts/json-batching.md (batch response).
    missing = graph.get(f"/users/{ROOM}/events/AAMkADnothere=").json()
    assert_shape(example("error_example.json"), missing, exact=False)
    doc_batch = example("batch_response.json")
    sb.control.set_roles(["Calendars.ReadWrite"])
    limited = Graph(sb, get_token(sb))
    batch = limited.post(
        "/$batch",
        {
            "requests": [
                {"id": "1", "method": "GET", "url": f"/users/{ROOM}/events"},
                {"id": "3", "method": "GET", "url": f"/applications(appId='{sb.client_id}')"},
            ]
        },
    ).json()
    assert set(batch) == set(doc_batch)
    # Inner headers differ by service (x-ms-resource-unit is directory-only): compare as objects.
    for ours_item, doc_item in zip(batch["responses"], doc_batch["responses"], strict=True):
        assert set(ours_item) == set(doc_item)
        assert_shape({**doc_item, "headers": {}, "body": None}, ours_item, exact=False)
        assert {"Cache-Control", "Content-Type"} <= set(ours_item["headers"])
    assert_shape(doc_batch["responses"][0]["body"], batch["responses"][0]["body"], exact=True)
    denied = batch["responses"][1]
    assert denied["status"] == 403
    # The docs' inner error body is complete: compare it exactly.
    assert_shape(doc_batch["responses"][1]["body"], denied["body"], exact=True)
    assert denied["body"]["error"]["code"] == doc_batch["responses"][1]["body"]["error"]["code"]


def test_sync_state_not_found_matches_a_real_410(sb: Sandbox, graph: Graph) -> None:
    # A logged 410 from calendarView/delta (microsoftgraph/microsoft-graph-docs issue 2350).
    first = graph.get(
        f"/users/{ROOM}/calendarView/delta?startDateTime=2030-01-01&endDateTime=2030-02-01"
    ).json()
    sb.control.invalidate_delta(ROOM)
    gone = graph.get(first["@odata.deltaLink"])
    assert gone.status_code == 410
    assert_shape(example("sync_state_not_found.json"), gone.json(), exact=False)
    assert gone.json()["error"]["code"] == "SyncStateNotFound"


def test_places_schedule_and_password_match_the_docs(sb: Sandbox, graph: Graph) -> None:
    rooms = graph.get("/places/microsoft.graph.room").json()["value"]
    # GD api-reference/v1.0/resources/room.md, JSON representation (the schema): exact.
    for room in rooms:
        assert_shape(example("room_resource.json"), room, exact=True)
    # GD api-reference/v1.0/api/place-list.md, Example 2.
    lists = graph.get("/places/microsoft.graph.roomlist").json()
    assert_shape(example("room_lists.json"), lists, exact=True)
    # GD api-reference/v1.0/api/calendar-getschedule.md, Response.
    graph.post(
        f"/users/{ROOM}/events", event_body("busy", "2030-03-15T12:00:00", "2030-03-15T14:00:00")
    )
    schedule = graph.post(
        f"/users/{ROOM}/calendar/getSchedule",
        {
            "schedules": [ROOM],
            "startTime": {"dateTime": "2030-03-15T09:00:00", "timeZone": "UTC"},
            "endTime": {"dateTime": "2030-03-15T18:00:00", "timeZone": "UTC"},
            "availabilityViewInterval": 60,
        },
    ).json()
    assert_shape(example("schedule.json"), schedule, exact=True)
    assert schedule["value"][0]["availabilityView"] == "000220000"  # the docs' own value
    # GD api-reference/v1.0/api/application-addpassword.md, Response.
    app_id = graph.get(f"/applications(appId='{sb.client_id}')").json()["id"]
    added = graph.post(
        f"/applications/{app_id}/addPassword", {"passwordCredential": {"displayName": "x"}}
    ).json()
    assert_shape(example("password_credential.json"), added, exact=True)
