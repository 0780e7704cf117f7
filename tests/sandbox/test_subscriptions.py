"""Subscriptions: the validation handshake, change and lifecycle notifications, renewal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox import Sandbox
from tests.sandbox.conftest import ROOM, Graph, Receiver, event_body

CHANGE_KEYS = {
    "subscriptionId",
    "subscriptionExpirationDateTime",
    "changeType",
    "resource",
    "resourceData",
    "clientState",
    "tenantId",
}


def in_minutes(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def subscribe(graph: Graph, receiver: Receiver, **extra: Any) -> Any:
    body = {
        "changeType": "created,updated,deleted",
        "notificationUrl": f"{receiver.url}/api/graph/notifications?tenant=contoso",
        "lifecycleNotificationUrl": f"{receiver.url}/api/graph/lifecycle",
        "resource": f"users/{ROOM}/events",
        "expirationDateTime": in_minutes(4000),
        "clientState": "a-random-secret-per-subscription",
        **extra,
    }
    return graph.post("/subscriptions", body)


def test_validation_handshake_then_created(sb: Sandbox, graph: Graph, receiver: Receiver) -> None:
    answer = subscribe(graph, receiver)
    assert answer.status_code == 201, answer.text
    sub = answer.json()
    assert sub["resource"] == f"users/{ROOM}/events"
    assert sub["applicationId"] == sb.client_id
    assert sub["changeType"] == "created,updated,deleted"
    assert sub["clientState"] == "a-random-secret-per-subscription"
    assert len(receiver.validations) == 2
    notify, lifecycle = receiver.validations
    assert notify["path"] == "/api/graph/notifications"
    assert lifecycle["path"] == "/api/graph/lifecycle"
    # The token travels URL-encoded (spaces, colons, symbols) and decodes to text with spaces.
    assert "%20" in notify["raw_query"] and "%3A" in notify["raw_query"]
    assert "tenant=contoso" in notify["raw_query"]
    assert " " in notify["token"] and ":" in notify["token"]
    records = sb.control.deliveries()
    assert [(r["kind"], r["status"]) for r in records] == [("validation", 200), ("validation", 200)]


def test_subscription_refused_unless_the_token_is_echoed(
    sb: Sandbox, graph: Graph, receiver: Receiver
) -> None:
    receiver.validation_mode = "wrong"
    wrong = subscribe(graph, receiver)
    assert wrong.status_code == 400
    assert wrong.json()["error"]["message"] == (
        "Subscription validation request failed. Response must exactly match validationToken "
        "query parameter."
    )
    receiver.validation_mode = "json"
    quoted = subscribe(graph, receiver)
    assert quoted.status_code == 400
    receiver.validation_mode = "status500"
    failed = subscribe(graph, receiver)
    assert failed.status_code == 400
    assert "must respond with 200 OK" in failed.json()["error"]["message"]
    assert graph.get("/subscriptions").json()["value"] == []
    unreachable = subscribe(graph, receiver, notificationUrl="http://127.0.0.1:9/nothing")
    assert unreachable.status_code == 400
    receiver.validation_mode = "slow"
    sb.control.update_settings(validation_timeout_seconds=0.3)  # Graph allows 10 s
    slow = subscribe(graph, receiver)
    assert slow.status_code == 400
    assert slow.json()["error"]["message"] == "Subscription validation request timed out."


def test_subscription_rules(sb: Sandbox, graph: Graph, receiver: Receiver) -> None:
    # Outlook events without resource data: up to 10,080 minutes (7 days).
    too_long = subscribe(graph, receiver, expirationDateTime=in_minutes(10081))
    assert too_long.status_code == 400
    assert too_long.json()["error"] == {
        **too_long.json()["error"],
        "code": "ExtensionError",
        "message": "Subscription expiration can only be 10080 minutes in the future.",
    }
    assert subscribe(graph, receiver, clientState="x" * 129).status_code == 400
    assert subscribe(graph, receiver, changeType="created,moved").status_code == 400
    me = subscribe(graph, receiver, resource="me/events")
    assert me.status_code == 400
    unknown = subscribe(graph, receiver, resource="users/nobody@contoso.example/events")
    assert unknown.status_code == 404
    sb.control.update_settings(require_https_notifications=True)
    assert subscribe(graph, receiver).status_code == 400
    assert receiver.validations == []  # nothing was called for refused requests
    sb.control.update_settings(require_https_notifications=False)
    week = subscribe(graph, receiver, expirationDateTime=in_minutes(10079))
    assert week.status_code == 201, week.text


def test_change_notifications_arrive_asynchronously_in_graph_shape(
    sb: Sandbox, graph: Graph, receiver: Receiver
) -> None:
    sub = subscribe(graph, receiver).json()
    sb.control.update_settings(notification_delay_seconds=0.3)
    room = graph.get(f"/users/{ROOM}").json()
    by_person = sb.control.create_event(
        ROOM, event_body("walk-in", "2030-01-07T09:00:00", "2030-01-07T10:00:00")
    )
    by_app = graph.post(
        f"/users/{ROOM}/events", event_body("booking", "2030-01-07T11:00:00", "2030-01-07T12:00:00")
    ).json()
    assert receiver.notifications() == []  # the writes returned before anything was delivered
    receiver.wait(lambda: len(receiver.notifications()) >= 2)
    assert len(receiver.posts) == 1  # both came in one POST
    post = receiver.posts[0]
    assert post["path"] == "/api/graph/notifications"
    assert post["query"] == {"tenant": ["contoso"]}  # the URL's query string comes back
    items = post["body"]["value"]
    assert {i["resourceData"]["id"] for i in items} == {by_person["id"], by_app["id"]}
    for item in items:
        assert set(item) == CHANGE_KEYS
        assert item["subscriptionId"] == sub["id"]
        assert item["changeType"] == "created"
        assert item["clientState"] == "a-random-secret-per-subscription"
        assert item["tenantId"] == sb.tenant_id
        event_id = item["resourceData"]["id"]
        assert item["resource"] == f"Users/{room['id']}/Events/{event_id}"
        assert item["resourceData"]["@odata.type"] == "#Microsoft.Graph.Event"
        assert item["resourceData"]["@odata.id"] == item["resource"]
        assert item["resourceData"]["@odata.etag"].startswith('W/"')

    graph.patch(f"/users/{ROOM}/events/{by_app['id']}", {"subject": "moved"})
    sb.control.delete_event(ROOM, by_person["id"])
    receiver.wait(lambda: len(receiver.notifications()) >= 4)
    later = receiver.notifications()[2:]
    assert {(i["changeType"], i["resourceData"]["id"]) for i in later} == {
        ("updated", by_app["id"]),
        ("deleted", by_person["id"]),
    }
    records = [r for r in sb.control.deliveries() if r["kind"] == "change"]
    assert all(r["status"] == 202 for r in records)


def test_failed_deliveries_are_retried_and_recorded(
    sb: Sandbox, graph: Graph, receiver: Receiver
) -> None:
    subscribe(graph, receiver)
    receiver.delivery_statuses = [500, 503]
    sb.control.create_event(ROOM, event_body("x", "2030-01-07T09:00:00", "2030-01-07T10:00:00"))
    records = sb.control.wait_for_deliveries(
        lambda rs: any(r["kind"] == "change" and r["status"] == 202 for r in rs)
    )
    changes = [r for r in records if r["kind"] == "change"]
    assert [(r["attempt"], r["status"]) for r in changes] == [(1, 500), (2, 503), (3, 202)]
    assert changes[0]["retryScheduled"] is True
    assert len(receiver.posts) == 3
    assert receiver.posts[0]["body"] == receiver.posts[2]["body"]


def test_lifecycle_notifications(sb: Sandbox, graph: Graph, receiver: Receiver) -> None:
    sub = subscribe(graph, receiver).json()
    sb.control.send_lifecycle(sub["id"], "reauthorizationRequired", pause=True)
    receiver.wait(lambda: len(receiver.notifications("/api/graph/lifecycle")) == 1)
    item = receiver.notifications("/api/graph/lifecycle")[0]
    assert item == {
        "subscriptionId": sub["id"],
        "subscriptionExpirationDateTime": item["subscriptionExpirationDateTime"],
        "tenantId": sb.tenant_id,
        "clientState": "a-random-secret-per-subscription",
        "lifecycleEvent": "reauthorizationRequired",
    }
    # While it waits for reauthorization, changes are not notified (and are lost, as in Graph).
    sb.control.create_event(ROOM, event_body("lost", "2030-01-07T09:00:00", "2030-01-07T10:00:00"))
    assert graph.post(f"/subscriptions/{sub['id']}/reauthorize").status_code == 204
    sb.control.create_event(ROOM, event_body("seen", "2030-01-07T11:00:00", "2030-01-07T12:00:00"))
    receiver.wait(lambda: len(receiver.notifications("/api/graph/notifications")) == 1)

    sb.control.send_lifecycle(sub["id"], "missed")
    sb.control.send_lifecycle(sub["id"], "subscriptionRemoved")
    receiver.wait(lambda: len(receiver.notifications("/api/graph/lifecycle")) == 3)
    events = [i["lifecycleEvent"] for i in receiver.notifications("/api/graph/lifecycle")]
    assert events == ["reauthorizationRequired", "missed", "subscriptionRemoved"]
    assert graph.get(f"/subscriptions/{sub['id']}").status_code == 404


def test_list_renew_delete_and_expiry(sb: Sandbox, graph: Graph, receiver: Receiver) -> None:
    first = subscribe(graph, receiver).json()
    second = subscribe(graph, receiver).json()
    page = graph.get("/subscriptions?$top=1").json()
    assert len(page["value"]) == 1
    rest = graph.get(page["@odata.nextLink"]).json()
    assert {page["value"][0]["id"], rest["value"][0]["id"]} == {first["id"], second["id"]}
    assert "@odata.nextLink" not in rest

    renewed = graph.patch(f"/subscriptions/{first['id']}", {"expirationDateTime": in_minutes(4200)})
    assert renewed.status_code == 200
    assert renewed.json()["expirationDateTime"] > first["expirationDateTime"]
    lifecycle = graph.patch(
        f"/subscriptions/{first['id']}", {"lifecycleNotificationUrl": f"{receiver.url}/other"}
    )
    assert lifecycle.status_code == 400

    assert graph.delete(f"/subscriptions/{second['id']}").status_code == 204
    missing = graph.get(f"/subscriptions/{second['id']}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "ResourceNotFound"

    sb.control.expire_subscription(first["id"])
    assert graph.get(f"/subscriptions/{first['id']}").status_code == 404
    sb.control.create_event(ROOM, event_body("x", "2030-01-07T09:00:00", "2030-01-07T10:00:00"))
    sb.control.create_event(ROOM, event_body("y", "2030-01-07T10:00:00", "2030-01-07T11:00:00"))
    assert graph.get("/subscriptions").json()["value"] == []
    assert [r for r in sb.control.deliveries() if r["kind"] == "change"] == []
