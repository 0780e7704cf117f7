"""Access keys as the Functions host applies them: function keys open their own function, host
keys every function-level function, the master key everything (admin level and the runtime's
``/admin/...`` endpoints included)."""

from __future__ import annotations

import pytest

from devhost.http_server import Keys, request_key
from sync_core.config import ConfigError
from tests.devhost.test_devhost import KEY, StartHost, start_host

__all__ = ["start_host"]  # the fixture, shared with test_devhost

MASTER, HOST, OWN, OTHER = "master-key-0001", "host-admin-key-02", "items-only-key-03", "x-key-04"
KEYS = Keys(
    master=MASTER,
    host={"admin": HOST},
    function={"items": {"reader": OWN}, "item_delete": {"default": OTHER}},
)


@pytest.mark.parametrize(
    ("level", "function", "key", "opens"),
    [
        ("anonymous", "greet", None, True),
        ("function", "items", None, False),
        ("function", "items", "wrong", False),
        ("function", "items", OWN, True),  # its own function key
        ("function", "ITEMS", OWN, True),  # function names compare without case
        ("function", "special", OWN, False),  # not another function's
        ("function", "items", OTHER, False),
        ("function", "special", HOST, True),  # a host key opens every function-level function
        ("function", "special", MASTER, True),
        ("admin", "special", HOST, False),  # admin level: the master key only
        ("admin", "items", OWN, False),
        ("admin", "special", MASTER, True),
    ],
)
def test_which_key_opens_which_function(
    level: str, function: str, key: str | None, opens: bool
) -> None:
    assert KEYS.opens(level, function, key) is opens


def test_the_runtime_admin_endpoints_take_the_master_key_only() -> None:
    assert KEYS.opens_runtime_admin(MASTER)
    assert not KEYS.opens_runtime_admin(HOST)
    assert not KEYS.opens_runtime_admin(OWN)
    assert not KEYS.opens_runtime_admin(None)


def test_without_keys_nothing_is_enforced() -> None:
    keys = Keys()
    assert not keys.enforced
    assert keys.opens("function", "items", None)
    assert keys.opens("admin", "items", "anything")
    assert keys.opens_runtime_admin(None)


def test_the_header_wins_over_the_code_parameter() -> None:
    assert request_key(OWN, {"code": HOST}) == OWN
    assert request_key(None, {"code": HOST}) == HOST
    assert request_key("", {"code": HOST}) == HOST
    assert request_key(None, {}) is None


def test_keys_from_settings() -> None:
    keys = Keys.from_settings(
        {
            "FUNCTIONS_KEY": MASTER,
            "FUNCTIONS_HOST_KEYS": f" admin={HOST} , ops=abc==",
            "FUNCTIONS_FUNCTION_KEYS": f"Items/reader={OWN},item_delete={OTHER}",
        },
        ["items", "item_delete", "special"],
    )
    assert keys == Keys(
        master=MASTER,
        host={"admin": HOST, "ops": "abc=="},
        function={"items": {"reader": OWN}, "item_delete": {"default": OTHER}},
    )
    assert Keys.from_settings({}, ["items"]) == Keys()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"FUNCTIONS_KEY": MASTER, "FUNCTIONS_HOST_KEYS": "admin"},
            "setting FUNCTIONS_HOST_KEYS: each entry must be name=value",
        ),
        (
            {"FUNCTIONS_KEY": MASTER, "FUNCTIONS_FUNCTION_KEYS": "bookings/platform=x"},
            "setting FUNCTIONS_FUNCTION_KEYS: the app has no function named 'bookings'",
        ),
        (
            {"FUNCTIONS_HOST_KEYS": f"admin={HOST}"},
            "setting FUNCTIONS_KEY: is missing (the master key; needed once "
            "FUNCTIONS_HOST_KEYS or FUNCTIONS_FUNCTION_KEYS is set)",
        ),
    ],
)
def test_malformed_key_settings_are_named(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Keys.from_settings(settings, ["items"])
    assert str(refused.value) == message


def test_the_host_applies_the_key_rules(start_host: StartHost) -> None:
    host = start_host(
        FUNCTIONS_HOST_KEYS=f"admin={HOST}", FUNCTIONS_FUNCTION_KEYS=f"items/reader={OWN}"
    )
    own = {"x-functions-key": OWN}
    assert host.call("GET", "/api/items/room/7", headers=own).status_code == 200
    assert host.call("GET", "/api/items/room/7", params={"code": OWN}).status_code == 200
    # Another function behind the same path, and a third one: the function key opens neither.
    assert host.call("DELETE", "/api/items/room/7", headers=own).status_code == 401
    refused = host.call("GET", "/api/items/room/special", headers=own)
    assert (refused.status_code, refused.content) == (401, b"")
    assert host.admin("nightly", headers=own).status_code == 401

    admin = {"x-functions-key": HOST}
    assert host.call("GET", "/api/items/room/7", headers=admin).status_code == 200
    assert host.call("DELETE", "/api/items/room/7", headers=admin).status_code == 204
    assert host.call("GET", "/api/items/room/special", headers=admin).status_code == 200
    assert host.admin("nightly", headers=admin).status_code == 401  # not the master key

    master = {"x-functions-key": KEY}
    assert host.call("DELETE", "/api/items/room/7", headers=master).status_code == 204
    assert host.admin("nightly", headers=master).status_code == 202
    assert host.call("GET", "/api/greet/x").status_code == 201
    for secret in (OWN, HOST, KEY):
        assert secret not in host.stdout + host.stderr  # keys are never logged


def test_a_key_for_an_unknown_function_stops_the_host(start_host: StartHost) -> None:
    host = start_host(wait=False, FUNCTIONS_FUNCTION_KEYS="itemz/reader=abc")
    assert host.wait_exit() == 2
    assert host.stderr.strip().splitlines()[-1] == (
        "error: setting FUNCTIONS_FUNCTION_KEYS: the app has no function named 'itemz'"
    )
