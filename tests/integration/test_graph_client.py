"""The Graph client against the simulated tenant, over TLS with its own CA."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandbox import Sandbox
from sync_core.config import load_settings
from sync_core.credentials.sources import source_for
from sync_core.graph import BatchRequest, DeltaReset, ErrorKind, GraphClient, GraphError

ROOM = "room.berlin@contoso.example"


@pytest.fixture
def graph(tenant_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[GraphClient]:
    # The process edge: requests reads the CA bundle from the environment, as in Azure.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tenant_env["REQUESTS_CA_BUNDLE"])
    settings = load_settings(tenant_env, Path("/nonexistent"))
    yield GraphClient.from_settings(settings, source_for(settings))


def event_body(subject: str, day: int = 1, hour: int = 9) -> dict[str, object]:
    start = (datetime.now(UTC) + timedelta(days=day)).replace(hour=hour, minute=0, second=0)
    return {
        "subject": subject,
        "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "end": {
            "dateTime": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"),
            "timeZone": "UTC",
        },
    }


def test_token_through_msal_carries_the_granted_roles(graph: GraphClient) -> None:
    assert os.environ["REQUESTS_CA_BUNDLE"].endswith("ca.pem")
    claims = graph.tokens.claims()
    assert "Calendars.ReadWrite" in claims["roles"]
    assert claims["tid"] == graph.settings.tenant_id


def test_429_retry_after_is_waited_out(graph: GraphClient, tenant: Sandbox) -> None:
    tenant.control.add_fault(r"/places/microsoft\.graph\.room", "GET", status=429, retry_after=2)
    started = time.monotonic()
    rooms = list(graph.rooms())
    gap = time.monotonic() - started
    assert rooms
    assert 2.0 <= gap < 5.0, f"waited {gap:.2f} s for Retry-After: 2"
    log = [r for r in tenant.control.requests() if "microsoft.graph.room" in r["path"]]
    assert [r["status"] for r in log][:2] == [429, 200]


def test_503_backs_off_and_succeeds(graph: GraphClient, tenant: Sandbox) -> None:
    tenant.control.add_fault(r"/users/.*/calendar$", "GET", status=503, count=2)
    started = time.monotonic()
    assert graph.check_mailbox(ROOM)["id"]
    assert time.monotonic() - started >= 0.25 + 0.5  # jittered 0.5 s, then 1 s ceilings


def test_a_401_refreshes_the_token_once(graph: GraphClient, tenant: Sandbox) -> None:
    graph.check_mailbox(ROOM)
    tenant.control.add_fault(
        r"/users/.*/calendar$", "GET", status=401, code="InvalidAuthenticationToken"
    )
    tenant.control.clear_requests()
    assert graph.check_mailbox(ROOM)["id"]
    kinds = [r.get("kind") for r in tenant.control.requests()]
    assert kinds == ["graph", "login", "graph"]  # 401, one fresh token, success


def test_paging_follows_next_links(graph: GraphClient, tenant: Sandbox) -> None:
    for i in range(23):
        tenant.control.create_event(ROOM, event_body(f"Meeting {i}", day=1 + i % 5, hour=8 + i % 9))
    graph.page_size = 10
    start = datetime.now(UTC)
    events = list(graph.calendar_view(ROOM, start, start + timedelta(days=10)))
    assert len(events) == 23
    views = [r for r in tenant.control.requests() if "calendarView" in r["path"]]
    assert len(views) == 3


def test_batch_retries_a_throttled_inner_request(graph: GraphClient, tenant: Sandbox) -> None:
    created = [tenant.control.create_event(ROOM, event_body(f"B{i}", day=i + 1)) for i in range(3)]
    target = created[1]["id"]
    tenant.control.add_fault(f".*/events/{target}$", "GET", status=429, retry_after=1)
    answers = graph.batch(
        [
            BatchRequest(str(i), "GET", f"/users/{ROOM}/events/{e['id']}", mailbox=ROOM)
            for i, e in enumerate(created)
        ]
    )
    assert [a.status for a in answers] == [200, 200, 200]
    assert answers[1].body["id"] == target
    batches = [r for r in tenant.control.requests() if r["path"].endswith("$batch")]
    assert len(batches) == 2  # the throttled one went again, alone


def test_delta_round_pages_removals_and_restart(graph: GraphClient, tenant: Sandbox) -> None:
    for i in range(12):
        tenant.control.create_event(ROOM, event_body(f"D{i}", day=1 + i % 4, hour=8 + i))
    graph.page_size = 5
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=30)
    pages = list(graph.calendar_delta(ROOM, start=start, end=end))
    assert len(pages) >= 3
    assert sum(len(p.changed) for p in pages) == 12
    assert pages[-1].delta_link and all(p.delta_link is None for p in pages[:-1])
    first = pages[0].changed[0]["id"]
    tenant.control.delete_event(ROOM, first)
    tenant.control.update_event(ROOM, pages[1].changed[0]["id"], {"subject": "Renamed"})
    changes = list(graph.calendar_delta(ROOM, link=pages[-1].delta_link))
    assert first in [i for p in changes for i in p.removed]
    assert "Renamed" in [e["subject"] for p in changes for e in p.changed]
    tenant.control.invalidate_delta(ROOM)
    with pytest.raises(DeltaReset) as caught:
        list(graph.calendar_delta(ROOM, link=changes[-1].delta_link))
    assert caught.value.kind is ErrorKind.SYNC_STATE_LOST and caught.value.retryable


@pytest.mark.parametrize(
    ("setup", "kind", "code"),
    [
        ("unknown", ErrorKind.MAILBOX_UNKNOWN, "ErrorInvalidUser"),
        ("not_enabled", ErrorKind.MAILBOX_NOT_ENABLED, "MailboxNotEnabledForRESTAPI"),
        ("access_denied", ErrorKind.ACCESS_DENIED, "ErrorAccessDenied"),
        ("item", ErrorKind.ITEM_NOT_FOUND, "ErrorItemNotFound"),
        ("token", ErrorKind.TOKEN_INVALID, "InvalidAuthenticationToken"),
    ],
)
def test_mailbox_errors_are_translated(
    graph: GraphClient, tenant: Sandbox, setup: str, kind: ErrorKind, code: str
) -> None:
    mailbox = ROOM
    if setup == "unknown":
        mailbox = "nobody@contoso.example"
    elif setup in ("not_enabled", "access_denied"):
        tenant.control.set_mailbox_state(ROOM, setup)
    elif setup == "token":
        tenant.control.add_fault(r"/users/.*/calendar$", "GET", status=401, code=code, count=2)
    with pytest.raises(GraphError) as caught:
        if setup == "item":
            graph.get_event(ROOM, "AAMkAGone")
        else:
            graph.check_mailbox(mailbox)
    error = caught.value
    assert error.kind is kind
    assert error.code == code
    assert error.hint
    if kind is not ErrorKind.TOKEN_INVALID:
        assert mailbox in error.message


@pytest.mark.parametrize(
    ("problem", "kind", "code"),
    [
        ("wrong", ErrorKind.SECRET_INVALID, "AADSTS7000215"),
        ("expired", ErrorKind.SECRET_EXPIRED, "AADSTS7000222"),
    ],
)
def test_secret_errors_are_named(
    tenant_env: dict[str, str],
    tenant: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    problem: str,
    kind: ErrorKind,
    code: str,
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tenant_env["REQUESTS_CA_BUNDLE"])
    env = dict(tenant_env)
    if problem == "wrong":
        env["CLIENT_SECRET"] = "0b4e2c1a-secret-id-not-value"
    else:
        for secret in tenant.control.app()["passwordCredentials"]:
            tenant.control.expire_secret(secret["keyId"])
    settings = load_settings(env, Path("/nonexistent"))
    graph = GraphClient.from_settings(settings, source_for(settings))
    with pytest.raises(GraphError) as caught:
        graph.check_mailbox(ROOM)
    assert caught.value.kind is kind
    assert caught.value.code == code
    assert "CLIENT_SECRET" in caught.value.message + caught.value.hint
