"""The parts of ``host.json`` the local host honours: the HTTP route prefix and queue polling."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class StartupError(Exception):
    """The app or its host.json cannot be served; ``str()`` is one line for the console."""


_TIMESPAN = re.compile(r"(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,7}))?")


def parse_timespan(value: str) -> float:
    """A .NET TimeSpan string (``[d.]hh:mm:ss[.fffffff]``) → seconds."""
    found = _TIMESPAN.fullmatch(value.strip())
    if not found:
        raise ValueError(f"must be a TimeSpan like 00:01:00 (got {value!r})")
    days, hours, minutes, seconds, fraction = found.groups()
    if int(minutes) > 59 or int(seconds) > 59:
        raise ValueError(f"must be a TimeSpan like 00:01:00 (got {value!r})")
    total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    return total + (float(f"0.{fraction}") if fraction else 0.0)


@dataclass(frozen=True)
class QueueOptions:
    """``extensions.queues``, with the Functions host's defaults."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    message_encoding: str = "base64"


@dataclass(frozen=True)
class HostConfig:
    route_prefix: str = "api"
    queues: QueueOptions = field(default_factory=QueueOptions)


def _section(document: Mapping[str, Any], *path: str) -> dict[str, Any]:
    """A nested object of host.json, keys lower-cased (the host reads them case-insensitively)."""
    current: Any = document
    for key in path:
        current = {str(k).lower(): v for k, v in current.items()}.get(key.lower(), {})
        if not isinstance(current, dict):
            raise StartupError(f"host.json {'.'.join(path)} must be an object")
    return {str(k).lower(): v for k, v in current.items()}


def _int(queues: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = queues.get(key.lower(), default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise StartupError(
            f"host.json extensions.queues.{key} must be a whole number from {low} to {high} "
            f"(got {value!r})"
        )
    return value


def _timespan(queues: dict[str, Any], key: str, default: float) -> float:
    value = queues.get(key.lower())
    if value is None:
        return default
    try:
        return parse_timespan(str(value))
    except ValueError as exc:
        raise StartupError(f"host.json extensions.queues.{key} {exc}") from None


def parse_host_json(document: Mapping[str, Any]) -> HostConfig:
    http = _section(document, "extensions", "http")
    prefix = http.get("routeprefix", "api")
    if not isinstance(prefix, str):
        raise StartupError("host.json extensions.http.routePrefix must be a string")
    queues = _section(document, "extensions", "queues")
    batch_size = _int(queues, "batchSize", 16, 1, 32)
    encoding = str(queues.get("messageencoding", "base64")).lower()
    if encoding not in ("base64", "none"):
        raise StartupError('host.json extensions.queues.messageEncoding must be "base64" or "none"')
    return HostConfig(
        route_prefix=prefix.strip("/"),
        queues=QueueOptions(
            batch_size=batch_size,
            new_batch_threshold=_int(queues, "newBatchThreshold", batch_size // 2, 0, 1000),
            max_polling_interval=max(0.1, _timespan(queues, "maxPollingInterval", 60.0)),
            visibility_timeout=_timespan(queues, "visibilityTimeout", 0.0),
            max_dequeue_count=_int(queues, "maxDequeueCount", 5, 1, 10_000),
            message_encoding=encoding,
        ),
    )


def read_host_json(root: Path) -> HostConfig:
    path = root / "host.json"
    if not path.is_file():
        raise StartupError(
            f"no host.json in {root} (run from the function app's folder or pass --root)"
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StartupError(f"{path} cannot be read as JSON ({exc})") from None
    if not isinstance(document, dict):
        raise StartupError(f"{path} must hold a JSON object")
    return parse_host_json(document)
