"""calendarView/delta: a paged round, then incremental changes with @removed, then 410."""

from __future__ import annotations

from typing import Any

from sandbox import Sandbox
from tests.sandbox.conftest import ROOM, Graph, event_body

WINDOW = "startDateTime=2030-01-01T00:00:00Z&endDateTime=2030-02-01T00:00:00Z"


def round_pages(graph: Graph, link: str, size: int = 2) -> tuple[list[dict[str, Any]], str, int]:
    """Follow nextLinks to the deltaLink: (items, deltaLink, pages)."""
    items: list[dict[str, Any]] = []
    pages = 0
    while True:
        answer = graph.get(link, headers={"Prefer": f"odata.maxpagesize={size}"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["@odata.context"].endswith("/v1.0/$metadata#Collection(event)")
        assert "odata.track-changes" in answer.headers["Preference-Applied"]
        items += body["value"]
        pages += 1
        if "@odata.deltaLink" in body:
            assert "@odata.nextLink" not in body
            assert "$deltatoken=" in body["@odata.deltaLink"]
            return items, body["@odata.deltaLink"], pages
        assert "$skiptoken=" in body["@odata.nextLink"]
        link = body["@odata.nextLink"]


def create(graph: Graph, subject: str, day: str, hour: int = 9) -> str:
    answer = graph.post(
        f"/users/{ROOM}/events",
        event_body(subject, f"{day}T{hour:02d}:00:00", f"{day}T{hour + 1:02d}:00:00"),
    )
    assert answer.status_code == 201
    return str(answer.json()["id"])


def test_a_round_then_changes_then_410_after_invalidation(sb: Sandbox, graph: Graph) -> None:
    ids = [create(graph, f"e{n}", f"2030-01-{n + 10:02d}") for n in range(5)]
    outside = create(graph, "march", "2030-03-05")

    items, delta_link, pages = round_pages(graph, f"/users/{ROOM}/calendarView/delta?{WINDOW}")
    assert pages == 3
    assert sorted(i["id"] for i in items) == sorted(ids)
    assert all(i["@odata.type"] == "#microsoft.graph.event" for i in items)
    assert outside not in {i["id"] for i in items}

    nothing, delta_link, _ = round_pages(graph, delta_link)
    assert nothing == []

    sb.control.update_event(ROOM, ids[0], {"subject": "e0 edited by a person"})
    assert graph.delete(f"/users/{ROOM}/events/{ids[1]}").status_code == 204
    moved = graph.patch(
        f"/users/{ROOM}/events/{ids[2]}",
        {
            "start": {"dateTime": "2030-04-01T09:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2030-04-01T10:00:00", "timeZone": "UTC"},
        },
    )
    assert moved.status_code == 200
    new = create(graph, "new", "2030-01-20")
    far = create(graph, "far away", "2030-06-01")

    changes, delta_link, _ = round_pages(graph, delta_link)
    removed = {c["id"] for c in changes if "@removed" in c}
    full = {c["id"]: c for c in changes if "@removed" not in c}
    assert full.keys() == {ids[0], new}
    assert full[ids[0]]["subject"] == "e0 edited by a person"
    # Deleted, moved out of the window, and (Graph's quirk) changed outside the window.
    assert removed == {ids[1], ids[2], far}
    assert all(
        c
        == {
            "@odata.type": "#microsoft.graph.event",
            "id": c["id"],
            "@removed": {"reason": "deleted"},
        }
        for c in changes
        if "@removed" in c
    )
    assert ids[3] not in full and ids[4] not in full

    assert sb.control.invalidate_delta(ROOM) > 0
    expired = graph.get(delta_link)
    assert expired.status_code == 410
    assert expired.json()["error"]["code"] == "SyncStateNotFound"
    fresh, _, _ = round_pages(graph, f"/users/{ROOM}/calendarView/delta?{WINDOW}", size=10)
    assert sorted(i["id"] for i in fresh) == sorted([ids[0], ids[3], ids[4], new])


def test_a_cancelled_occurrence_comes_as_removed(sb: Sandbox, graph: Graph) -> None:
    series = sb.control.create_event(
        ROOM,
        event_body(
            "Weekly",
            "2030-01-08T12:00:00",
            "2030-01-08T13:00:00",
            recurrence={
                "pattern": {"type": "weekly", "daysOfWeek": ["tuesday"]},
                "range": {"type": "endDate", "startDate": "2030-01-08", "endDate": "2030-01-29"},
            },
        ),
    )
    items, delta_link, _ = round_pages(graph, f"/users/{ROOM}/calendarView/delta?{WINDOW}", 10)
    assert len(items) == 4
    assert {i["type"] for i in items} == {"occurrence"}
    assert {i["seriesMasterId"] for i in items} == {series["id"]}
    sb.control.delete_event(ROOM, items[2]["id"])
    changes, _, _ = round_pages(graph, delta_link, 10)
    assert [c["id"] for c in changes if "@removed" in c] == [items[2]["id"]]


def test_delta_refuses_query_options_and_needs_a_window(graph: Graph) -> None:
    select = graph.get(f"/users/{ROOM}/calendarView/delta?{WINDOW}&$select=subject")
    assert select.status_code == 400
    no_window = graph.get(f"/users/{ROOM}/calendarView/delta")
    assert no_window.status_code == 400
    assert no_window.json()["error"]["code"] == "ErrorInvalidParameter"
    garbage = graph.get(f"/users/{ROOM}/calendarView/delta?$deltatoken=nonsense")
    assert garbage.status_code == 410
