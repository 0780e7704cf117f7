"""Exchange Online RBAC for Applications: calendar access granted by Exchange per mailbox, limited
to a management scope, while the Entra token carries no calendar role (docs/sandbox.md, "Mailbox
scope")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from sandbox import Sandbox
from sandbox.client import ControlError
from tests.sandbox.conftest import PERSON, ROOM, ROOM2, Graph, Receiver, event_body, get_token

DENIED = ("ErrorAccessDenied", "Access is denied. Check credentials and try again.")
WINDOW = "startDateTime=2030-01-01T00:00:00Z&endDateTime=2030-01-31T00:00:00Z"


def in_minutes(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fresh(sb: Sandbox) -> Graph:
    """A client with a new token: roles are fixed in a token when it is issued."""
    return Graph(sb, get_token(sb))


def roles(graph: Graph) -> list[str]:
    token = str(graph.session.headers["Authorization"]).removeprefix("Bearer ")
    return list(jwt.decode(token, options={"verify_signature": False})["roles"])


def error(answer: Any) -> tuple[str, str]:
    body = answer.json()["error"]
    return body["code"], body["message"]


def subscription(receiver: Receiver, mailbox: str) -> dict[str, Any]:
    return {
        "changeType": "created,updated,deleted",
        "notificationUrl": f"{receiver.url}/api/graph/notifications",
        "resource": f"users/{mailbox}/events",
        "expirationDateTime": in_minutes(600),
        "clientState": "per-subscription-secret",
    }


EVENT = event_body("Scoped", "2030-01-10T09:00:00", "2030-01-10T10:00:00")


def test_the_token_lacks_the_role_and_only_scoped_mailboxes_answer(sb: Sandbox) -> None:
    assignment = sb.control.scope_calendars([ROOM])
    assert assignment == {
        "role": "Application Calendars.ReadWrite",
        "permission": "Calendars.ReadWrite",
        "scope": [ROOM],
    }
    graph = fresh(sb)
    assert "Calendars.ReadWrite" not in roles(graph)
    assert {"Place.Read.All", "User.Read.All"} <= set(roles(graph))

    # In scope: every calendar route works.
    calendar = graph.get(f"/users/{ROOM}/calendar", params={"$select": "id"})
    assert calendar.status_code == 200, calendar.text
    created = graph.post(f"/users/{ROOM}/events", EVENT)
    assert created.status_code == 201, created.text
    event_id = created.json()["id"]
    assert graph.patch(f"/users/{ROOM}/events/{event_id}", {"subject": "x"}).status_code == 200
    assert graph.get(f"/users/{ROOM}/calendarView?{WINDOW}").status_code == 200
    assert graph.get(f"/users/{ROOM}/calendarView/delta?{WINDOW}").status_code == 200
    assert graph.delete(f"/users/{ROOM}/events/{event_id}").status_code == 204

    # Out of scope: Exchange finds no grant for the mailbox.
    for answer in (
        graph.get(f"/users/{ROOM2}/calendar", params={"$select": "id"}),
        graph.get(f"/users/{ROOM2}/events"),
        graph.post(f"/users/{ROOM2}/events", EVENT),
        graph.get(f"/users/{ROOM2}/calendarView?{WINDOW}"),
        graph.get(f"/users/{ROOM2}/calendarView/delta?{WINDOW}"),
        graph.get(f"/users/{PERSON}/calendar"),
    ):
        assert answer.status_code == 403, answer.text
        assert error(answer) == DENIED

    # A mailbox addressed by id is the same mailbox.
    room_id = sb.control.mailbox(ROOM2)["id"]
    answer = graph.get(f"/users/{room_id}/calendar")
    assert answer.status_code == 403
    assert error(answer) == DENIED

    # Routes that are not about mailboxes still need their Entra roles, and have them.
    assert graph.get(f"/users/{ROOM2}").status_code == 200
    assert graph.get("/places/microsoft.graph.room").status_code == 200


def test_subscriptions_follow_the_scope(sb: Sandbox, receiver: Receiver) -> None:
    sb.control.scope_calendars([ROOM])
    graph = fresh(sb)
    created = graph.post("/subscriptions", subscription(receiver, ROOM))
    assert created.status_code == 201, created.text
    refused = graph.post("/subscriptions", subscription(receiver, ROOM2))
    assert refused.status_code == 403
    assert error(refused) == DENIED
    assert not receiver.validations[1:], "no handshake for a mailbox the app may not read"

    # Out of the scope later: renewing and reauthorizing are refused too.
    sub_id = created.json()["id"]
    sb.control.change_scope(remove=[ROOM])
    renewed = graph.patch(f"/subscriptions/{sub_id}", {"expirationDateTime": in_minutes(900)})
    assert renewed.status_code == 403
    assert error(renewed) == DENIED
    assert graph.post(f"/subscriptions/{sub_id}/reauthorize").status_code == 403
    sb.control.change_scope(add=[ROOM])
    renewed = graph.patch(f"/subscriptions/{sub_id}", {"expirationDateTime": in_minutes(900)})
    assert renewed.status_code == 200, renewed.text


def test_changing_the_scope_applies_to_the_next_request(sb: Sandbox) -> None:
    sb.control.scope_calendars([ROOM])
    graph = fresh(sb)
    assert graph.get(f"/users/{ROOM2}/calendar").status_code == 403
    assert sb.control.change_scope(add=[ROOM2.upper()])["scope"] == sorted([ROOM, ROOM2])
    assert graph.get(f"/users/{ROOM2}/calendar").status_code == 200
    sb.control.change_scope(remove=[ROOM])
    assert graph.get(f"/users/{ROOM}/calendar").status_code == 403
    assert sb.control.exchange_roles()[0]["scope"] == [ROOM2]
    sb.control.remove_exchange_role()
    assert graph.get(f"/users/{ROOM2}/calendar").status_code == 403
    assert sb.control.exchange_roles() == []


def test_entra_and_exchange_grants_add_up(sb: Sandbox) -> None:
    """A tenant-wide Entra grant next to a scoped Exchange role: the scope narrows nothing."""
    sb.control.scope_calendars([ROOM], keep_entra_grant=True)
    graph = fresh(sb)
    assert "Calendars.ReadWrite" in roles(graph)
    assert graph.get(f"/users/{ROOM2}/calendar").status_code == 200
    assert graph.post(f"/users/{ROOM2}/events", EVENT).status_code == 201


def test_a_read_role_reads_and_does_not_write(sb: Sandbox, receiver: Receiver) -> None:
    sb.control.scope_calendars([ROOM], role="Application Calendars.Read")
    sb.control.set_roles(["Place.Read.All", "User.Read.All"])
    graph = fresh(sb)
    assert graph.get(f"/users/{ROOM}/calendarView?{WINDOW}").status_code == 200
    assert graph.post("/subscriptions", subscription(receiver, ROOM)).status_code == 201
    written = graph.post(f"/users/{ROOM}/events", EVENT)
    assert written.status_code == 403
    assert error(written) == DENIED


def test_mailboxes_exchange_cannot_scope_answer_their_own_errors(sb: Sandbox) -> None:
    sb.control.scope_calendars([ROOM])
    graph = fresh(sb)
    unknown = graph.get("/users/nobody@contoso.example/calendar")
    assert unknown.status_code == 404
    assert error(unknown)[0] == "ErrorInvalidUser"
    sb.control.set_mailbox_state(ROOM2, "not_enabled")
    answer = graph.get(f"/users/{ROOM2}/calendar")
    assert answer.status_code == 404
    assert error(answer)[0] == "MailboxNotEnabledForRESTAPI"


def test_batch_and_get_schedule_check_each_mailbox(sb: Sandbox) -> None:
    sb.control.scope_calendars([ROOM])
    graph = fresh(sb)
    batch = graph.post(
        "/$batch",
        {
            "requests": [
                {"id": "1", "method": "GET", "url": f"/users/{ROOM}/calendar"},
                {"id": "2", "method": "GET", "url": f"/users/{ROOM2}/calendar"},
            ]
        },
    )
    assert batch.status_code == 200, batch.text
    answers = {r["id"]: r for r in batch.json()["responses"]}
    assert answers["1"]["status"] == 200
    assert answers["2"]["status"] == 403
    assert answers["2"]["body"]["error"]["code"] == "ErrorAccessDenied"

    schedule = graph.post(
        f"/users/{ROOM}/calendar/getSchedule",
        {
            "schedules": [ROOM, ROOM2],
            "startTime": {"dateTime": "2030-01-10T00:00:00", "timeZone": "UTC"},
            "endTime": {"dateTime": "2030-01-11T00:00:00", "timeZone": "UTC"},
        },
    )
    assert schedule.status_code == 200, schedule.text
    items = {i["scheduleId"]: i for i in schedule.json()["value"]}
    assert "error" not in items[ROOM]
    assert items[ROOM2]["error"]["responseCode"] == "ErrorAccessDenied"


def test_the_control_api_checks_what_it_is_given(sb: Sandbox) -> None:
    with pytest.raises(ControlError) as caught:
        sb.control.scope_calendars([ROOM], role="Mail.Send")
    assert caught.value.status == 400
    with pytest.raises(ControlError) as caught:
        sb.control.scope_calendars(["nobody@contoso.example"])
    assert caught.value.status == 404
    with pytest.raises(ControlError) as caught:
        sb.control.change_scope(add=[ROOM])
    assert caught.value.status == 404  # no assignment yet
    sb.control.scope_calendars([ROOM])
    view = sb.control.app()
    assert view["exchangeRoleAssignments"][0]["scope"] == [ROOM]
    assert "Calendars.ReadWrite" not in view["roles"]
    sb.control.reset()
    assert sb.control.exchange_roles() == []
    assert "Calendars.ReadWrite" in sb.control.app()["roles"]
