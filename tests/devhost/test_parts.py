"""devhost's pure parts: route templates, host.json, queue output values, setting expressions."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from azure.functions.queue import QueueMessage

from devhost.functions import queue_messages, resolve_settings
from devhost.hostjson import StartupError, parse_host_json, parse_timespan
from devhost.routing import compile_route, split_prefix
from sync_core.config import ConfigError


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("items/{kind}/{id}", "items/room/42", {"kind": "room", "id": "42"}),
        ("items/{kind}/{id}", "ITEMS/room/42", {"kind": "room", "id": "42"}),
        ("items/{kind}/{id}", "items/room", None),
        ("items/{kind}/{id}", "items/room/42/x", None),
        ("items/{id:int}", "items/-7", {"id": "-7"}),
        ("items/{id:int}", "items/seven", None),
        ("items/{id:alpha}", "items/abc", {"id": "abc"}),
        ("items/{id:length(3)}", "items/anything", {"id": "anything"}),  # ignored constraint
        ("files/{name?}", "files", {}),
        ("files/{name?}", "files/a.txt", {"name": "a.txt"}),
        ("files/{*rest}", "files/a/b/c", {"rest": "a/b/c"}),
        ("files/{name}.{ext}", "files/report.pdf", {"name": "report", "ext": "pdf"}),
        ("people/{name}", "people/ada%20lovelace", {"name": "ada lovelace"}),
        ("health", "health", {}),
        ("", "", {}),
    ],
)
def test_route_templates(template: str, path: str, expected: dict[str, str] | None) -> None:
    assert compile_route(template).match(path) == expected


def test_literal_segments_take_precedence_over_parameters() -> None:
    routes = [compile_route(t) for t in ("a/{x}", "a/{x?}", "a/literal", "a/{x:int}", "{*all}")]
    ordered = sorted(routes, key=lambda r: r.rank)
    assert [r.template for r in ordered] == ["a/literal", "a/{x:int}", "a/{x}", "a/{x?}", "{*all}"]


@pytest.mark.parametrize("template", ["a/{x}/{x}", "a/{x", "a/{}"])
def test_malformed_templates_are_refused(template: str) -> None:
    with pytest.raises(ValueError, match=r"route|empty|twice|braces"):
        compile_route(template)


@pytest.mark.parametrize(
    ("path", "prefix", "expected"),
    [
        ("/api/items/1", "api", "items/1"),
        ("/API/items/1/", "api", "items/1"),
        ("/api", "api", ""),
        ("/apix/items", "api", None),
        ("/items/1", "api", None),
        ("/api/items", "", "api/items"),
    ],
)
def test_route_prefix(path: str, prefix: str, expected: str | None) -> None:
    assert split_prefix(path, prefix) == expected


def test_timespans() -> None:
    assert parse_timespan("00:00:02") == 2
    assert parse_timespan("00:01:00") == 60
    assert parse_timespan("1.02:00:00") == 93600
    assert parse_timespan("00:00:00.5") == 0.5
    for bad in ("2s", "00:60:00", "1:2", ""):
        with pytest.raises(ValueError, match="TimeSpan"):
            parse_timespan(bad)


def test_host_json_defaults_are_azures() -> None:
    config = parse_host_json({"version": "2.0"})
    assert config.route_prefix == "api"
    q = config.queues
    assert (q.batch_size, q.new_batch_threshold, q.max_dequeue_count) == (16, 8, 5)
    assert (q.max_polling_interval, q.visibility_timeout, q.message_encoding) == (60, 0, "base64")


def test_host_json_values_and_case_insensitive_keys() -> None:
    config = parse_host_json(
        {
            "Extensions": {
                "HTTP": {"routePrefix": "/v1/"},
                "queues": {"BatchSize": 6, "maxPollingInterval": "00:00:03", "MaxDequeueCount": 2},
            }
        }
    )
    assert config.route_prefix == "v1"
    assert (config.queues.batch_size, config.queues.new_batch_threshold) == (6, 3)
    assert (config.queues.max_polling_interval, config.queues.max_dequeue_count) == (3, 2)


@pytest.mark.parametrize(
    "queues",
    [{"batchSize": 0}, {"batchSize": 33}, {"maxDequeueCount": "5"}, {"messageEncoding": "utf8"}],
)
def test_host_json_bad_values_name_the_key(queues: dict[str, Any]) -> None:
    with pytest.raises(StartupError, match=next(iter(queues))):
        parse_host_json({"extensions": {"queues": queues}})


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_queue_output_values() -> None:
    assert queue_messages(None) == []
    assert queue_messages("héllo") == [b64("héllo")]
    assert queue_messages(b"\x00\x01") == [base64.b64encode(b"\x00\x01").decode()]
    assert queue_messages({"a": 1}) == [b64('{"a":1}')]
    assert queue_messages(["x", {"b": 2}]) == [b64("x"), b64('{"b":2}')]
    assert queue_messages(QueueMessage(body=b"m")) == [b64("m")]  # type: ignore[no-untyped-call]
    with pytest.raises(TypeError, match="int"):
        queue_messages(5)


def test_setting_expressions() -> None:
    env = {"SCHEDULE": "0 */5 * * * *", "Q": "work", "EMPTY": " "}
    assert resolve_settings("%SCHEDULE%", "t", env) == "0 */5 * * * *"
    assert resolve_settings("%Q%-in", "t", env) == "work-in"
    assert resolve_settings("plain", "t", env) == "plain"
    for missing in ("%NOPE%", "%EMPTY%"):
        with pytest.raises(ConfigError, match=missing.strip("%")):
            resolve_settings(missing, "the schedule of timer t", env)
