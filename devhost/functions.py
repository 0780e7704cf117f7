"""Index a ``FunctionApp`` and invoke its functions as the Functions host does.

Supported: HTTP, timer and queue triggers, the HTTP ``$return`` output, and queue output bindings
(``@app.queue_output``). Anything else is refused at start-up with one line naming the function.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import azure.functions as func

from devhost.hostjson import StartupError
from sync_core.config import ConfigError
from sync_core.store.queues import QueueStore, encode_message

log = logging.getLogger("devhost")
invocations = logging.getLogger("devhost.invocations")

KINDS = {"httpTrigger": "http", "timerTrigger": "timer", "queueTrigger": "queue"}
DEFAULT_CONNECTION = "AzureWebJobsStorage"
ALL_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class QueueOutput:
    arg: str  # "$return" when the return value is the message
    queue: str
    connection: str


@dataclass
class Function:
    name: str
    kind: str  # "http", "timer" or "queue"
    func: Callable[..., Any]
    trigger_arg: str
    outputs: tuple[QueueOutput, ...]
    # http
    route: str = ""
    methods: tuple[str, ...] = ALL_METHODS
    auth_level: str = "function"  # "anonymous", "function" or "admin"
    # timer
    schedule: str = ""
    run_on_startup: bool = False
    # queue
    queue: str = ""
    connection: str = DEFAULT_CONNECTION
    # One run at a time (timers; the admin endpoint uses it too).
    running: threading.Lock = field(default_factory=threading.Lock)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)


_SETTING = re.compile(r"%([^%]+)%")


def resolve_settings(value: str, where: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace ``%NAME%`` by the app setting NAME, as binding expressions do."""
    env = os.environ if environ is None else environ

    def setting(found: re.Match[str]) -> str:
        name = found.group(1)
        resolved = env.get(name, "").strip()
        if not resolved:
            raise ConfigError(name, f"is missing (used by {where})")
        return resolved

    return _SETTING.sub(setting, value)


def _enum_value(value: Any) -> str:
    return str(getattr(value, "value", value))


def index(app: Any) -> list[Function]:
    """Read every function of ``app`` (calls ``app.get_functions()``, which works only once)."""
    try:
        indexed = app.get_functions()
    except ValueError as exc:  # duplicate names, a function without trigger...
        raise StartupError(f"the function app cannot be indexed: {exc}") from None
    functions: list[Function] = []
    for indexed_fn in indexed:
        name = str(indexed_fn.get_function_name())
        trigger = indexed_fn.get_trigger()
        kind = KINDS.get(trigger.get_binding_name() if trigger else "")
        if trigger is None or kind is None:
            kind_name = trigger.get_binding_name() if trigger else "none"
            raise StartupError(f"function {name}: trigger {kind_name} is not supported by devhost")
        outputs: list[QueueOutput] = []
        for binding in indexed_fn.get_bindings():
            binding_type = binding.get_binding_name()
            if binding is trigger or (binding_type == "http" and binding.name == "$return"):
                continue
            if binding_type == "queue" and binding.direction == 1:  # BindingDirection.OUT
                outputs.append(
                    QueueOutput(
                        arg=binding.name,
                        queue=resolve_settings(binding.queue_name, f"function {name}"),
                        connection=binding.connection or DEFAULT_CONNECTION,
                    )
                )
                continue
            raise StartupError(
                f"function {name}: binding {binding_type} ({binding.name}) is not supported by "
                "devhost"
            )
        fn = Function(
            name=name,
            kind=kind,
            func=indexed_fn.get_user_function(),
            trigger_arg=trigger.name,
            outputs=tuple(outputs),
        )
        if kind == "http":
            fn.route = str(getattr(trigger, "route", None) or name)
            methods = getattr(trigger, "methods", None)
            if methods:
                fn.methods = tuple(dict.fromkeys(_enum_value(m).upper() for m in methods))
            level = _enum_value(getattr(trigger, "auth_level", None) or "function").lower()
            fn.auth_level = level
        elif kind == "timer":
            fn.schedule = str(trigger.schedule)
            fn.run_on_startup = bool(getattr(trigger, "run_on_startup", False))
        else:
            fn.queue = resolve_settings(trigger.queue_name, f"function {name}")
            fn.connection = trigger.connection or DEFAULT_CONNECTION
        _check_signature(fn)
        functions.append(fn)
    return functions


def _check_signature(fn: Function) -> None:
    bound = {fn.trigger_arg, *(o.arg for o in fn.outputs)}
    parameters = inspect.signature(fn.func).parameters
    if fn.trigger_arg not in parameters:
        raise StartupError(
            f"function {fn.name}: has no parameter {fn.trigger_arg!r} for its trigger"
        )
    for parameter in parameters.values():
        if parameter.name in bound or parameter.default is not inspect.Parameter.empty:
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        raise StartupError(
            f"function {fn.name}: parameter {parameter.name!r} has no binding devhost can fill"
        )


class OutBinding(func.Out[Any]):
    """What the function sets on an output binding."""

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


def queue_messages(value: Any) -> list[str]:
    """An output binding's value → the base64 texts to send (none for None)."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [message for item in value for message in _one_message(item)]
    return _one_message(value)


def _one_message(value: Any) -> list[str]:
    if isinstance(value, func.QueueMessage):
        value = value.get_body()
    if isinstance(value, bytes | bytearray):
        return [base64.b64encode(bytes(value)).decode("ascii")]
    if isinstance(value, str):
        return [encode_message(value)]
    if isinstance(value, dict):
        return [encode_message(json.dumps(value, separators=(",", ":")))]
    raise TypeError(
        f"a queue output takes str, bytes, dict or a list of them, not {type(value).__name__}"
    )


class InFlight:
    """Counts running invocations so that shutdown can wait for them."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = threading.Condition()

    @contextmanager
    def track(self) -> Iterator[None]:
        with self._idle:
            self._count += 1
        try:
            yield
        finally:
            with self._idle:
                self._count -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._count == 0, timeout)


def outcome_text(exc: BaseException) -> str:
    text = f"failed: {type(exc).__name__}: {exc}".replace("\r", " ").replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."


def log_invocation(fn_name: str, trigger: str, started: float, outcome: str, via: str = "") -> None:
    """One line per invocation; never bodies or header values."""
    duration = (time.monotonic() - started) * 1000
    invocations.info(
        "function=%s trigger=%s%s duration_ms=%.1f outcome=%s",
        fn_name,
        trigger,
        f" via={via}" if via else "",
        duration,
        outcome,
    )


class Invoker:
    """Calls functions (sync in the caller's thread, async on one shared event loop) and writes
    their queue outputs after they return."""

    def __init__(self, stores: Callable[[str], QueueStore], inflight: InFlight) -> None:
        self._stores = stores
        self.inflight = inflight
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="devhost-asyncio", daemon=True
        )
        self._loop_thread.start()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=2)

    def call(self, fn: Function, trigger_value: Any) -> Any:
        """Run ``fn`` and write its outputs; raises what the function or an output write raised."""
        outs = {o.arg: OutBinding() for o in fn.outputs if o.arg != "$return"}
        kwargs: dict[str, Any] = {fn.trigger_arg: trigger_value, **outs}
        if fn.is_async:
            result = asyncio.run_coroutine_threadsafe(fn.func(**kwargs), self._loop).result()
        else:
            result = fn.func(**kwargs)
        pending = [
            (output, queue_messages(result if output.arg == "$return" else outs[output.arg].get()))
            for output in fn.outputs
        ]
        for output, messages in pending:
            queue = self._stores(output.connection).queue(output.queue)
            for message in messages:
                queue.send_message(message)
        return None if any(o.arg == "$return" for o in fn.outputs) else result

    def run(self, fn: Function, trigger_value: Any, via: str = "") -> BaseException | None:
        """Run a timer or queue function with its log line; the exception if it failed."""
        started = time.monotonic()
        with self.inflight.track():
            try:
                self.call(fn, trigger_value)
            except Exception as exc:  # the function's failure is reported, not raised
                log.error("function %s failed", fn.name, exc_info=exc)
                log_invocation(fn.name, fn.kind, started, outcome_text(exc), via)
                return exc
        log_invocation(fn.name, fn.kind, started, "ok", via)
        return None


def utc_now() -> datetime:
    return datetime.now(UTC)
