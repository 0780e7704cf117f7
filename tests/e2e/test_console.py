"""The admin console over HTTP (forms as a browser posts them, without a browser): every page
answers, every change needs the console's CSRF token and cookie, a failed check saves nothing
and says what to do, and purge deletes only after it was confirmed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from typing import Any

import pytest
import requests

from sandbox import Sandbox
from sandbox.platform import PlatformSim
from tests.conftest import KEY_HEADER, ROOM_A, ROOM_B, LocalHost, product_env, send_and_sync, wait

UI = "/api/admin/ui"


@pytest.fixture
def host(tenant_env: dict[str, str], platform: PlatformSim, tenant: Sandbox) -> Iterator[LocalHost]:
    server = LocalHost(product_env(tenant_env, platform)).wait_ready()
    platform.product_url = server.base
    yield server
    server.stop()


@pytest.fixture
def browser() -> Iterator[requests.Session]:
    """A session that keeps the console's cookie and sends the key as a header."""
    with requests.Session() as session:
        session.headers.update(KEY_HEADER)
        yield session


def token(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no form token"
    return unescape(found.group(1))


def get(session: requests.Session, host: LocalHost, path: str, **params: str) -> requests.Response:
    answer = session.get(f"{host.base}{UI}{path}", params=params, timeout=60)
    assert answer.headers["Content-Type"].startswith("text/html")
    assert "script-src" not in answer.headers["Content-Security-Policy"]
    assert "form-action 'self'" in answer.headers["Content-Security-Policy"]
    return answer


def post(
    session: requests.Session, host: LocalHost, path: str, fields: dict[str, Any], page: str
) -> requests.Response:
    return session.post(
        f"{host.base}{UI}{path}",
        data={"csrf": token(page), **fields},
        allow_redirects=False,
        timeout=120,
    )


def test_map_a_room_resync_deactivate_and_purge(
    host: LocalHost, browser: requests.Session, platform: PlatformSim, tenant: Sandbox
) -> None:
    rooms = get(browser, host, "/rooms")
    assert rooms.status_code == 200
    assert ROOM_A in rooms.text and "not mapped" in rooms.text
    form = get(browser, host, "/mapping", mailbox=ROOM_A)
    assert f'value="{ROOM_A}"' in form.text

    # Check first: nothing is saved, the answer says the mailbox is fine.
    checked = post(
        browser, host, "/mapping",
        {"resource_id": "room-42", "mailbox": ROOM_A, "privacy": "full", "direction": "both",
         "enabled": "on", "action": "check"},
        form.text,
    )  # fmt: skip
    assert checked.status_code == 200
    assert "is reachable" in checked.text
    assert requests.get(f"{host.base}/api/admin/mappings/room-42", headers=KEY_HEADER,
                        timeout=10).status_code == 404  # fmt: skip

    saved = post(
        browser, host, "/mapping",
        {"resource_id": "room-42", "mailbox": ROOM_A, "privacy": "full", "direction": "both",
         "enabled": "on", "ignore_all_day": "on", "action": "save"},
        form.text,
    )  # fmt: skip
    assert saved.status_code == 303
    page = browser.get(f"{host.base}{saved.headers['Location']}", timeout=60)
    assert "The mapping is saved and sync has started." in page.text
    mapping = requests.get(
        f"{host.base}/api/admin/mappings/room-42", headers=KEY_HEADER, timeout=10
    ).json()
    assert mapping["mailbox"] == ROOM_A and mapping["filters"]["ignore_all_day"] is True

    # In sync: a booking lands; the dashboard links the resource.
    send_and_sync(platform, platform.booking_event(resource_id="room-42"))
    dashboard = get(browser, host, "")
    assert 'href="/api/admin/ui/mapping?resource=room-42"' in dashboard.text
    page = get(browser, host, "/mapping", resource="room-42")
    wait(lambda: "In sync" in get(browser, host, "/mapping", resource="room-42").text,
         what="the mapping to show in sync")  # fmt: skip

    resynced = post(browser, host, "/mapping/resync", {"resource_id": "room-42"}, page.text)
    assert resynced.status_code == 303 and "done=resynced" in resynced.headers["Location"]

    off = post(browser, host, "/mapping/enable", {"resource_id": "room-42", "enabled": "off"},
               page.text)  # fmt: skip
    assert off.status_code == 303
    assert requests.get(f"{host.base}/api/admin/mappings/room-42", headers=KEY_HEADER,
                        timeout=10).json()["enabled"] is False  # fmt: skip

    # Purge: the confirmation says what goes; without the tick nothing happens.
    confirm = get(browser, host, "/mapping/purge", resource="room-42")
    assert re.search(r'id="purge-events">1<', confirm.text), confirm.text
    refused = post(browser, host, "/mapping/purge", {"resource_id": "room-42"}, confirm.text)
    assert refused.status_code == 422
    assert [e for e in tenant.control.events(ROOM_A) if e.get("subject") == "Sprint review"]
    purged = post(browser, host, "/mapping/purge", {"resource_id": "room-42", "confirm": "on"},
                  confirm.text)  # fmt: skip
    assert purged.status_code == 303 and "done=purged" in purged.headers["Location"]
    assert tenant.control.events(ROOM_A) == []
    assert requests.get(f"{host.base}/api/admin/mappings/room-42", headers=KEY_HEADER,
                        timeout=10).status_code == 404  # fmt: skip


def test_a_failed_check_saves_nothing_and_says_what_to_do(
    host: LocalHost, browser: requests.Session
) -> None:
    form = get(browser, host, "/mapping")
    answer = post(
        browser, host, "/mapping",
        {"resource_id": "room-9", "mailbox": "nobody@contoso.example", "privacy": "busy_only",
         "direction": "both", "enabled": "on", "action": "save"},
        form.text,
    )  # fmt: skip
    assert answer.status_code == 422
    assert "Not saved" in answer.text and "What to do:" in answer.text
    assert 'value="nobody@contoso.example"' in answer.text  # the form keeps what was typed
    listed = requests.get(f"{host.base}/api/admin/mappings", headers=KEY_HEADER, timeout=10)
    assert listed.json()["value"] == []


def test_changes_need_the_token_the_cookie_and_this_origin(
    host: LocalHost, browser: requests.Session
) -> None:
    form = get(browser, host, "/mapping").text
    fields = {"resource_id": "room-42", "mailbox": ROOM_B, "action": "save", "enabled": "on"}
    # No token.
    bare = browser.post(f"{host.base}{UI}/mapping", data=fields, allow_redirects=False, timeout=30)
    assert bare.status_code == 403
    # The token without the cookie (another browser).
    with requests.Session() as other:
        other.headers.update(KEY_HEADER)
        stolen = other.post(f"{host.base}{UI}/mapping", data={"csrf": token(form), **fields},
                            allow_redirects=False, timeout=30)  # fmt: skip
        assert stolen.status_code == 403
    # Token and cookie, from another site.
    cross = browser.post(
        f"{host.base}{UI}/mapping", data={"csrf": token(form), **fields},
        headers={"Origin": "https://evil.example"}, allow_redirects=False, timeout=30,
    )  # fmt: skip
    assert cross.status_code == 403
    assert requests.get(f"{host.base}/api/admin/mappings", headers=KEY_HEADER,
                        timeout=10).json()["value"] == []  # fmt: skip
    # Positive control: the same form from this console is taken.
    taken = post(browser, host, "/mapping", fields, form)
    assert taken.status_code == 303


def test_every_value_is_escaped(host: LocalHost, browser: requests.Session) -> None:
    hostile = '<script>alert("x")</script>'
    requests.put(
        f"{host.base}/api/admin/mappings/{requests.utils.quote(hostile, safe='')}",
        json={"mailbox": ROOM_A}, headers=KEY_HEADER, timeout=60,
    ).raise_for_status()  # fmt: skip
    for path, params in (("", {}), ("/mapping", {"resource": hostile}), ("/rooms", {})):
        page = get(browser, host, path, **params)
        assert "<script>" not in page.text
    assert "&lt;script&gt;" in get(browser, host, "/mapping", resource=hostile).text


def test_the_doctor_and_bulk_pages(host: LocalHost, browser: requests.Session) -> None:
    doctor = get(browser, host, "/doctor")
    assert doctor.status_code == 200 and 'id="checks"' in doctor.text
    bulk = get(browser, host, "/bulk")
    preview = post(
        browser, host, "/bulk",
        {"mailboxes": f"{ROOM_A}\n{ROOM_B}", "template": "room-{local}", "privacy": "busy_only",
         "direction": "both", "action": "preview"},
        bulk.text,
    )  # fmt: skip
    assert preview.status_code == 200
    assert "Preview: nothing was saved" in preview.text and "2 would be created" in preview.text
    assert requests.get(f"{host.base}/api/admin/mappings", headers=KEY_HEADER,
                        timeout=10).json()["value"] == []  # fmt: skip
    applied = post(
        browser, host, "/bulk",
        {"mailboxes": f"{ROOM_A}\n{ROOM_B}", "template": "room-{local}", "privacy": "busy_only",
         "direction": "both", "action": "apply"},
        bulk.text,
    )  # fmt: skip
    assert "2 created" in applied.text
    listed = requests.get(f"{host.base}/api/admin/mappings", headers=KEY_HEADER, timeout=10)
    assert len(listed.json()["value"]) == 2


def test_links_carry_the_key_given_in_the_query(host: LocalHost) -> None:
    key = KEY_HEADER["x-functions-key"]
    page = requests.get(f"{host.base}{UI}", params={"code": key}, timeout=30)
    assert page.status_code == 200
    assert f'href="/api/admin/ui/rooms?code={key}"' in page.text


def test_a_save_over_a_change_made_meanwhile_is_refused(
    host: LocalHost, browser: requests.Session
) -> None:
    requests.put(f"{host.base}/api/admin/mappings/room-42", json={"mailbox": ROOM_A},
                 headers=KEY_HEADER, timeout=60).raise_for_status()  # fmt: skip
    first = get(browser, host, "/mapping", resource="room-42").text
    with requests.Session() as other:  # a second admin, with the page open too
        other.headers.update(KEY_HEADER)
        second = get(other, host, "/mapping", resource="room-42").text
        fields = {"resource_id": "room-42", "mailbox": ROOM_A, "enabled": "on", "action": "save"}
        etag = re.search(r'name="etag" value="([^"]*)"', second)
        assert etag is not None and etag.group(1)
        changed = {**fields, "privacy": "full", "etag": unescape(etag.group(1))}
        saved = post(other, host, "/mapping", changed, second)
        assert saved.status_code == 303
    etag = re.search(r'name="etag" value="([^"]*)"', first)
    assert etag is not None
    stale = {**fields, "privacy": "busy_only", "etag": unescape(etag.group(1))}
    late = post(browser, host, "/mapping", stale, first)
    assert late.status_code == 422
    assert "changed since it was read" in late.text
    mapping = requests.get(f"{host.base}/api/admin/mappings/room-42", headers=KEY_HEADER,
                           timeout=10).json()  # fmt: skip
    assert mapping["privacy"] == "full"
