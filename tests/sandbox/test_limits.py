"""$batch, per-mailbox throttling (concurrency and budget) and injected faults."""

from __future__ import annotations

import threading

import pytest
import requests

from sandbox import Sandbox
from tests.sandbox.conftest import PERSON, ROOM, ROOM2, Graph, event_body, token_response


def test_batch_with_one_inner_request_throttled_by_a_fault(sb: Sandbox, graph: Graph) -> None:
    fault = sb.control.add_fault(
        path=r"/events$", method="GET", mailbox=ROOM, status=429, retry_after=7, count=1
    )
    body = {
        "requests": [
            {"id": "1", "method": "GET", "url": f"/users/{PERSON}"},
            {"id": "2", "method": "GET", "url": f"/users/{ROOM}/events"},
            {
                "id": "3",
                "method": "POST",
                "url": f"/users/{ROOM}/events",
                "headers": {"Content-Type": "application/json"},
                "body": event_body("in a batch", "2030-01-07T09:00:00", "2030-01-07T10:00:00"),
            },
            {"id": "4", "method": "GET", "url": f"/users/{ROOM}/events"},
        ]
    }
    answer = graph.post("/$batch", body)
    assert answer.status_code == 200
    responses = {r["id"]: r for r in answer.json()["responses"]}
    assert responses["1"]["status"] == 200
    assert responses["1"]["body"]["mail"] == PERSON
    throttled = responses["2"]
    assert throttled["status"] == 429
    assert throttled["headers"]["Retry-After"] == "7"
    assert throttled["body"]["error"]["code"] == "TooManyRequests"
    assert responses["3"]["status"] == 201
    assert responses["3"]["body"]["subject"] == "in a batch"
    assert responses["4"]["status"] == 200  # the fault fired once
    assert [e["subject"] for e in responses["4"]["body"]["value"]] == ["in a batch"]
    log = sb.control.requests(mailbox=ROOM)
    inner = [e for e in log if e["batch"]]
    assert [e["status"] for e in inner] == [429, 201, 200]
    assert inner[0]["fault"] == fault["id"]
    assert sb.control.faults()[0]["hits"] == 1


def test_batch_limits_and_dependencies(graph: Graph) -> None:
    many = {
        "requests": [
            {"id": str(n), "method": "GET", "url": "/users/ada@contoso.example"} for n in range(21)
        ]
    }
    too_many = graph.post("/$batch", many)
    assert too_many.status_code == 400
    assert too_many.json()["error"]["code"] == "BadRequest"
    twice = {"requests": [{"id": "1", "method": "GET", "url": "/users/x"}] * 2}
    assert graph.post("/$batch", twice).status_code == 400
    no_type = {
        "requests": [{"id": "1", "method": "POST", "url": f"/users/{ROOM}/events", "body": {}}]
    }
    assert graph.post("/$batch", no_type).status_code == 400
    chained = {
        "requests": [
            {"id": "a", "method": "GET", "url": "/users/nobody@contoso.example/events"},
            {"id": "b", "method": "GET", "url": f"/users/{ROOM}/events", "dependsOn": ["a"]},
        ]
    }
    statuses = {r["id"]: r["status"] for r in graph.post("/$batch", chained).json()["responses"]}
    assert statuses == {"a": 404, "b": 424}


def test_at_most_four_concurrent_requests_per_mailbox(sb: Sandbox, graph: Graph) -> None:
    sb.control.add_fault(path=r"/events$", mailbox=ROOM, action="delay", delay=1.5, count=6)
    token = graph.session.headers["Authorization"]
    results: list[requests.Response] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    room_id = graph.get(f"/users/{ROOM}").json()["id"]

    def call(mailbox: str) -> None:
        client = Graph(sb, None)
        client.session.headers["Authorization"] = token
        barrier.wait()
        answer = client.get(f"/users/{mailbox}/events")
        with lock:
            results.append(answer)

    # By address or by id, it is one mailbox (for the limit and for the fault).
    threads = [threading.Thread(target=call, args=((ROOM, room_id)[n % 2],)) for n in range(6)]
    for thread in threads:
        thread.start()
    other = Graph(sb, None)
    other.session.headers["Authorization"] = token
    for thread in threads:
        thread.join(timeout=10)
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 200, 200, 200, 429, 429]
    throttled = [r for r in results if r.status_code == 429]
    for answer in throttled:
        assert answer.json()["error"]["code"] == "ApplicationThrottled"
        assert (
            answer.json()["error"]["message"] == "Application is over its MailboxConcurrency limit."
        )
        assert int(answer.headers["Retry-After"]) >= 1
    assert other.get(f"/users/{ROOM2}/events").status_code == 200  # another mailbox is free
    log = [e for e in sb.control.requests(mailbox=ROOM) if e["throttled"]]
    assert len(log) == 2


def test_request_budget_per_mailbox(sb: Sandbox, graph: Graph) -> None:
    sb.control.update_settings(request_budget=3, budget_window_seconds=60)
    assert [graph.get(f"/users/{ROOM}/events").status_code for _ in range(3)] == [200] * 3
    over = graph.get(f"/users/{ROOM}/events")
    assert over.status_code == 429
    assert 1 <= int(over.headers["Retry-After"]) <= 60
    assert graph.get(f"/users/{ROOM2}/events").status_code == 200


def test_injected_faults(sb: Sandbox, graph: Graph) -> None:
    sb.control.add_fault(path=r"calendarView", status=503, retry_after=2)
    url = f"/users/{ROOM}/calendarView?startDateTime=2030-01-01&endDateTime=2030-01-02"
    unavailable = graph.get(url)
    assert unavailable.status_code == 503
    assert unavailable.headers["Retry-After"] == "2"
    assert unavailable.json()["error"]["code"] == "serviceNotAvailable"
    assert graph.get(url).status_code == 200  # once only

    sb.control.add_fault(path=r"calendarView", status=504, probability=1.0)
    assert [graph.get(url).status_code for _ in range(3)] == [504] * 3
    sb.control.clear_faults()
    assert graph.get(url).status_code == 200

    sb.control.add_fault(path=r"/users/", method="POST", action="reset")
    with pytest.raises(requests.exceptions.ConnectionError):
        graph.post(
            f"/users/{ROOM}/events", event_body("x", "2030-01-07T09:00:00", "2030-01-07T10:00:00")
        )
    assert sb.control.events(ROOM) == []  # nothing was written
    logged = sb.control.requests(mailbox=ROOM)[-1]
    assert logged["status"] is None and "reset" in logged["error"]

    sb.control.add_fault(path=r"/oauth2/v2\.0/token$", status=503, retry_after=1)
    assert token_response(sb).status_code == 503
    assert token_response(sb).status_code == 200
    with pytest.raises(Exception, match="action must be"):
        sb.control.add_fault(action="explode")
