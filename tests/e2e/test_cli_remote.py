"""``python -m sync_core --url …``: the admin CLI against a running function host over its admin
API, from a process without the app's settings; and the keys: the booking platform's key opens
the booking route only, the admin key the admin routes."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from typing import Any

import pytest
import requests

from devhost.stack import start_platform
from sandbox import Sandbox
from sandbox.platform import PlatformSim
from sync_core.admin import cli as cli_module
from sync_core.admin import remote
from tests.conftest import FUNCTION_KEY, ROOM_A, ROOM_B, LocalHost, drained, wait
from tests.e2e.test_cli import TEGEL, cli, ours

ADMIN_KEY = "admin-host-key-7c21"
BOOKING_KEY = "booking-only-key-4e90"
ADMIN_ROUTES = [
    ("GET", "/api/admin/mappings"),
    ("GET", "/api/admin/mappings/room-42"),
    ("PUT", "/api/admin/mappings/room-42"),
    ("DELETE", "/api/admin/mappings/room-42?purge=true"),
    ("POST", "/api/admin/mappings/room-42/resync"),
    ("GET", "/api/admin/rooms"),
    ("GET", "/api/admin/status"),
    ("GET", "/api/admin/ui"),
    ("GET", "/api/admin/history"),
    ("GET", "/api/admin/doctor"),
    ("POST", "/api/admin/platform/test"),
]
# Differ from one call to the next by nature: when a document was made or a credential checked,
# a mapping's version.
VOLATILE = {"generated_at", "checked_at", "updated_at", "etag"}

Stack = tuple[LocalHost, PlatformSim, Sandbox]


@pytest.fixture
def keyed(tenant_env: dict[str, str], tenant: Sandbox) -> Iterator[Stack]:
    """The product with Azure's keys: the master key, a host key `admin`, and the platform's
    key scoped to the `booking_events` function."""
    platform = start_platform(tenant_env, BOOKING_KEY)
    env = tenant_env | {
        "FUNCTIONS_KEY": FUNCTION_KEY,
        "FUNCTIONS_HOST_KEYS": f"admin={ADMIN_KEY}",
        "FUNCTIONS_FUNCTION_KEYS": f"booking_events/platform={BOOKING_KEY}",
        "PLATFORM_WEBHOOK_URL": platform.webhook_url,
        "RETRY_BASE_SECONDS": "1",
    }
    host = LocalHost(env).wait_ready()
    platform.product_url = host.base
    host.map("room-42", ROOM_A)
    host.map("room-43", ROOM_B)
    yield host, platform, tenant
    host.stop()
    platform.stop()


def over(
    host: LocalHost, *args: str, key: str | None = ADMIN_KEY
) -> subprocess.CompletedProcess[str]:
    """The CLI against the host's URL, in a process without the app's settings."""
    target = ["--url", host.base] + (["--key", key] if key else [])
    return cli({}, *target, *args)


def document(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)


def steady(value: Any) -> Any:
    """``value`` without what differs between two calls by nature."""
    if isinstance(value, dict):
        return {k: steady(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [steady(v) for v in value]
    return value


def same_both_ways(host: LocalHost, *args: str) -> Any:
    """Run a read-only command here and over the URL; both exit alike and print the same JSON.
    Work done in between (a notification's read) can change a document, so one retry."""
    for _ in range(2):
        wait(lambda: drained(host), timeout=30, what="no work queued")
        here, there = cli(host.env, *args, "--json"), over(host, *args, "--json")
        if steady(document(here)) == steady(document(there)):
            assert here.returncode == there.returncode, (here.stderr, there.stderr)
            return document(there)
    assert steady(document(here)) == steady(document(there))


def test_every_command_over_the_url_prints_what_it_prints_here(keyed: Stack) -> None:
    host, platform, tenant = keyed

    rooms = same_both_ways(host, "rooms", "--resource-ids", "berlin-tegel")
    assert {"resource_id": "berlin-tegel", "mailbox": TEGEL, "match": "exact"}.items() <= (
        rooms["suggestions"][0].items()
    )
    assert over(host, "rooms").stdout == cli(host.env, "rooms").stdout

    created = over(host, "map", "room-44", TEGEL, "--privacy", "full")
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith(
        f"room-44 → {TEGEL}: created; privacy full; direction both; enabled"
    )
    # Each change made twice, over the URL and here: the same answer (the same mapping).
    for change in (["--disable"], ["--enable"], ["--privacy", "busy_only"]):
        there = over(host, "map", "room-44", *change, "--json")
        here = cli(host.env, "map", "room-44", *change, "--json")
        assert (there.returncode, here.returncode) == (0, 0), (there.stderr, here.stderr)
        assert steady(document(there)) == steady(document(here))
        assert document(there)["created"] is False
    assert document(here)["privacy"] == "busy_only" and document(here)["enabled"] is True

    status = same_both_ways(host, "status")
    assert {m["resource_id"] for m in status["mappings"]} == {"room-42", "room-43", "room-44"}
    history = same_both_ways(host, "history", "--resource", "room-44", "--limit", "2")
    assert len(history["value"]) == 2 and history["continuation"]
    doctor = same_both_ways(host, "doctor")
    assert doctor["result"] == "pass"

    there = over(host, "resync", "room-44", "--json")
    here = cli(host.env, "resync", "room-44", "--json")
    assert (there.returncode, here.returncode) == (0, 0)
    assert document(there) == document(here)
    assert document(there)["subscription"] == "ok"

    # A booking through the platform's own key, then purge over the URL.
    assert platform.send_booking(platform.booking_event(resource_id="room-44")).status_code == 202
    wait(lambda: len(ours(tenant, TEGEL)) == 1, what="the booking in the room's calendar")
    purged = over(host, "unmap", "room-44", "--purge", "--json")
    assert purged.returncode == 0, purged.stderr
    assert document(purged) == {
        "resource_id": "room-44",
        "deleted_events": 1,
        "already_gone": 0,
        "deleted_blockers": 0,
    }
    assert ours(tenant, TEGEL) == []

    # Refusals: the API's problem document, printed as a local run prints its own.
    there, here = over(host, "unmap", "room-44"), cli(host.env, "unmap", "room-44")
    assert (
        (there.returncode, there.stderr)
        == (here.returncode, here.stderr)
        == (
            1,
            "error: resource 'room-44' is not mapped\n",
        )
    )
    there = over(host, "map", "room-45", "nobody@contoso.example")
    here = cli(host.env, "map", "room-45", "nobody@contoso.example")
    assert there.returncode == here.returncode == 1
    assert there.stderr == here.stderr
    assert there.stderr.splitlines()[1:] == [
        "code: ErrorInvalidUser",
        "hint: Check the address in the mapping. For a room, use the room's resource mailbox "
        "address (Microsoft 365 admin center → Resources → Rooms & equipment).",
    ]
    there = over(host, "map", "room-45", "nobody@contoso.example", "--json")
    here = cli(host.env, "map", "room-45", "nobody@contoso.example", "--json")
    assert document(there) == document(here)
    assert document(there)["status"] == 422
    bad = over(host, "history", "--resource", "room-44", "--continuation", "not-ours", "--json")
    assert bad.returncode == 1
    assert document(bad)["type"] == "urn:calendar-sync:problem:validation-error"


def test_the_booking_key_opens_the_booking_route_only(keyed: Stack) -> None:
    host, platform, _ = keyed
    booking = {"x-functions-key": BOOKING_KEY}
    for method, path in ADMIN_ROUTES:
        answer = requests.request(method, host.base + path, headers=booking, timeout=30)
        assert (answer.status_code, answer.content) == (401, b""), (method, path)
    for key in (ADMIN_KEY, FUNCTION_KEY):  # the admin host key, and the master key
        answer = requests.get(
            f"{host.base}/api/admin/mappings", headers={"x-functions-key": key}, timeout=30
        )
        assert answer.status_code == 200
    answer = requests.get(f"{host.base}/api/admin/status", params={"code": ADMIN_KEY}, timeout=30)
    assert answer.status_code == 200

    # The platform's key opens its route; without a key, or with another, it stays shut.
    assert platform.send_booking(platform.booking_event()).status_code == 202
    unsigned = requests.post(f"{host.base}/api/bookings/events", data=b"{}", timeout=30)
    assert (unsigned.status_code, unsigned.content) == (401, b"")
    # The runtime's admin endpoint: the master key only.
    run = requests.post(
        f"{host.base}/admin/functions/safety_sweep",
        json={"input": ""},
        headers={"x-functions-key": ADMIN_KEY},
        timeout=30,
    )
    assert run.status_code == 401

    refused = over(host, "status", key=BOOKING_KEY)
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert refused.stderr.splitlines() == [
        "error: the app refused the key or sign-in (GET /api/admin/status answered 401)",
        f"hint: {remote.KEY_HINT}",
    ]
    scripted = over(host, "map", "room-42", "--disable", "--json", key=BOOKING_KEY)
    assert scripted.returncode == 2
    assert document(scripted)["status"] == 401
    assert document(scripted)["title"] == "Not authorized"
    nothing = over(host, "doctor", key=None)
    assert nothing.returncode == 2
    assert "the app refused no key" in nothing.stderr
    # The key may come from the environment instead of the command line.
    from_env = cli({"SYNC_ADMIN_KEY": ADMIN_KEY}, "--url", host.base, "status", "--json")
    assert from_env.returncode == 0, from_env.stderr
    assert document(from_env)["summary"]["mappings"] == 2
    # A URL that is not this app's admin API.
    elsewhere = cli({}, "--url", f"{host.base}/nothing", "--key", ADMIN_KEY, "status")
    assert elsewhere.returncode == 2
    assert "has no admin API" in elsewhere.stderr


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        _Recorder.seen.append({k.lower(): v for k, v in self.headers.items()})
        body = json.dumps({"value": [], "continuation": None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Token:
    def __init__(self, token: str, expires_on: int) -> None:
        self.token, self.expires_on = token, expires_on


class _Credential:
    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str) -> _Token:
        self.scopes += scopes
        return _Token(f"token-{len(self.scopes)}", 4102444800)


def test_entra_sends_a_token_for_the_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    credential = _Credential()
    monkeypatch.setattr(
        cli_module, "entra_token", lambda scope: remote.entra_token(scope, credential)
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    _Recorder.seen.clear()
    try:
        for _ in range(2):
            out, err = StringIO(), StringIO()
            code = cli_module.main(
                [
                    "--url",
                    base,
                    "--key",
                    ADMIN_KEY,
                    "--entra",
                    "--entra-scope",
                    "api://sync-admin",
                    "history",
                    "--json",
                ],
                out=out,
                err=err,
            )
            assert code == 0, err.getvalue()
            assert json.loads(out.getvalue()) == {"value": [], "continuation": None}
    finally:
        server.shutdown()
        server.server_close()
    assert credential.scopes == ["api://sync-admin/.default"] * 2  # one token per run
    assert [s["authorization"] for s in _Recorder.seen] == ["Bearer token-1", "Bearer token-2"]
    assert {s["x-functions-key"] for s in _Recorder.seen} == {ADMIN_KEY}

    err = StringIO()
    assert cli_module.main(["--url", base, "--entra", "status"], out=StringIO(), err=err) == 2
    assert err.getvalue().startswith("error: --entra needs --entra-scope")
    err = StringIO()
    assert cli_module.main(["--key", ADMIN_KEY, "status"], out=StringIO(), err=err) == 2
    assert err.getvalue() == "error: --key, --entra and --entra-scope go with --url\n"


def test_a_token_is_reused_until_shortly_before_it_expires() -> None:
    credential = _Credential()
    token = remote.entra_token("api://sync-admin/.default", credential)
    assert (token(), token()) == ("token-1", "token-1")

    class Expiring(_Credential):
        def get_token(self, *scopes: str) -> _Token:
            self.scopes += scopes
            return _Token(f"token-{len(self.scopes)}", int(time.time()) + 120)

    soon = Expiring()
    token = remote.entra_token("api://sync-admin/.default", soon)
    assert (token(), token()) == ("token-1", "token-2")  # within 5 minutes of expiry: renewed
