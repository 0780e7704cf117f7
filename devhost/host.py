"""The local stand-in for Azure Functions Core Tools: start-up, the run loop and shutdown."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from devhost.functions import (
    DEFAULT_CONNECTION,
    Function,
    InFlight,
    Invoker,
    index,
    resolve_settings,
)
from devhost.hostjson import HostConfig, StartupError, read_host_json
from devhost.http_server import DevServer, Keys, build_routes
from devhost.queue_trigger import QueuePoller
from devhost.singleton import TimerLeases, host_id, lease_seconds
from devhost.timers import TimerThread
from sync_core import ncrontab
from sync_core.config import (
    LOCAL_SETTINGS_FILE,
    SCHEDULE_DEFAULTS,
    ConfigError,
    Settings,
    load_settings,
    merged_environment,
)
from sync_core.store.queues import QueueStore
from sync_core.store.tables import TableStore

# How long shutdown waits for running invocations.
SHUTDOWN_GRACE = 5.0
# Like the Functions host's setting: more Python worker processes, so queue work is not held to
# one core by the GIL. Extra workers only take queue work; HTTP and timers stay in the first.
WORKER_PROCESS_COUNT = "FUNCTIONS_WORKER_PROCESS_COUNT"
MAX_WORKER_PROCESSES = 10
# Like an app scaled out to several instances: each instance is a whole host process (HTTP on the
# shared port, queues, timers as singletons); the first starts the others and stops them.
INSTANCES = "DEVHOST_INSTANCES"
MAX_INSTANCES = 10
# How long the first instance waits for the others to serve.
INSTANCE_START_TIMEOUT = 60.0


class _Formatter(logging.Formatter):
    """``2026-11-22T22:00:00Z message`` for invocation lines; level and logger for the rest.
    With several instances, ``instance=K`` follows the time."""

    label = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def format(self, record: logging.LogRecord) -> str:
        if record.name == "devhost.invocations":
            self._style._fmt = f"%(asctime)s {self.label}%(message)s"
        else:
            self._style._fmt = f"%(asctime)s {self.label}%(levelname)s %(name)s: %(message)s"
        return super().format(record)


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # The Azure SDK logs every storage request at INFO (with header names): too much locally.
    logging.getLogger("azure").setLevel(logging.WARNING)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devhost", description="Serve the function app locally, like `func start`."
    )
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the app")
    parser.add_argument(
        "--root", default=".", help="folder with host.json and local.settings.json (default: cwd)"
    )
    parser.add_argument("--queue-worker", action="store_true", help=argparse.SUPPRESS)
    # Set by the first instance on the ones it starts: their number, and where to say "serving".
    parser.add_argument("--instance", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ready-fd", type=int, default=-1, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def worker_process_count() -> int:
    raw = os.environ.get(WORKER_PROCESS_COUNT, "").strip() or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_WORKER_PROCESSES:
        raise ConfigError(
            WORKER_PROCESS_COUNT, f"must be a whole number from 1 to {MAX_WORKER_PROCESSES}"
        )
    return int(raw)


def instance_count() -> int:
    raw = os.environ.get(INSTANCES, "").strip() or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_INSTANCES:
        raise ConfigError(INSTANCES, f"must be a whole number from 1 to {MAX_INSTANCES}")
    return int(raw)


def start_queue_workers(args: argparse.Namespace, count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` more processes that run the queue triggers only (competing consumers)."""
    command = [sys.executable, "-m", "devhost", "--queue-worker", "--root", args.root]
    command += ["--app", args.app, "--instance", str(args.instance)]  # the instance it serves
    return [subprocess.Popen(command) for _ in range(count)]


def stop_processes(processes: list[subprocess.Popen[bytes]], grace: float = SHUTDOWN_GRACE) -> None:
    """SIGTERM (they stop cleanly), then wait; killed if they take longer than ``grace`` + 2 s."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + grace + 2
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def port_taken(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be served, or None. Checked without SO_REUSEPORT before the
    instances bind with it: otherwise they would silently share a port another host serves."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as HTTPServer binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            return str(exc)
    return None


def instance_command(argv: list[str] | None, port: int, instance: int, ready: int) -> list[str]:
    """The first instance's command line (``-c`` code included), as instance ``instance``."""
    if argv is None:
        # orig_argv keeps interpreter options and ``-c <code>`` (the soak's boot): all of it again.
        command = [sys.executable, *sys.orig_argv[1:]]
    else:
        command = [sys.executable, "-m", "devhost", *argv]
    return [*command, "--port", str(port), "--instance", str(instance), "--ready-fd", str(ready)]


def start_instances(
    argv: list[str] | None, port: int, count: int, stop: threading.Event
) -> list[subprocess.Popen[bytes]]:
    """Instances 1 to ``count - 1``, returned once each serves (writes its number on a pipe).
    StartupError if one exits or none of that happens within INSTANCE_START_TIMEOUT."""
    read_end, write_end = os.pipe()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for k in range(1, count):
            processes.append(
                subprocess.Popen(instance_command(argv, port, k, write_end), pass_fds=(write_end,))
            )
        os.close(write_end)
        write_end = -1
        ready: set[int] = set()
        buffer = b""
        deadline = time.monotonic() + INSTANCE_START_TIMEOUT
        while len(ready) < count - 1:
            for k, process in enumerate(processes, start=1):
                if process.poll() is not None:
                    raise StartupError(
                        f"instance {k} exited at start-up with code {process.returncode}"
                    )
            if stop.is_set():
                raise StartupError("stopped while the instances started")
            if time.monotonic() > deadline:
                waiting = sorted(set(range(1, count)) - ready)
                raise StartupError(
                    f"instances {waiting} did not start within {INSTANCE_START_TIMEOUT:.0f} s"
                )
            readable, _, _ = select.select([read_end], [], [], 0.2)
            if readable:
                chunk = os.read(read_end, 4096)
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                ready.update(int(line) for line in lines if line.strip().isdigit())
                if not chunk:  # every instance closed its end: the poll above says who died
                    time.sleep(0.1)
    except BaseException:
        stop_processes(processes)
        raise
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    return processes


def report_ready(fd: int, instance: int) -> None:
    """Tell the first instance that this one serves."""
    if fd >= 0:
        try:
            os.write(fd, f"{instance}\n".encode())
            os.close(fd)
        except OSError:
            pass


def load_environment(root: Path) -> Settings:
    """local.settings.json under what the environment sets, schedule defaults; then validate."""
    local_settings = root / LOCAL_SETTINGS_FILE
    for name, value in merged_environment(os.environ, local_settings).items():
        os.environ.setdefault(name, value)
    for name, value in SCHEDULE_DEFAULTS.items():
        if not os.environ.get(name, "").strip():
            os.environ[name] = value
    return load_settings(os.environ, local_settings)


def import_app(spec: str, root: Path) -> Any:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise StartupError(f"--app must be module:attribute (got {spec!r})")
    for folder in (str(Path.cwd()), str(root)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or module_name.startswith(f"{exc.name}."):
            raise StartupError(f"cannot import {module_name} (not found from {root})") from None
        raise
    app = getattr(module, attribute, None)
    if app is None or not hasattr(app, "get_functions"):
        raise StartupError(f"{spec} is not a FunctionApp")
    return app


@dataclass
class Timer:
    fn: Function
    schedule: ncrontab.Schedule
    expression: str


def resolve_timers(functions: list[Function]) -> list[Timer]:
    timers: list[Timer] = []
    for fn in functions:
        if fn.kind != "timer":
            continue
        expression = resolve_settings(fn.schedule, f"the schedule of timer {fn.name}")
        try:
            schedule = ncrontab.parse(expression)
        except ValueError as exc:
            names = [part.strip("%") for part in fn.schedule.split() if part.startswith("%")]
            where = names[0] if len(names) == 1 else f"schedule of timer {fn.name}"
            raise ConfigError(where, f"{exc} (got {expression!r})") from None
        timers.append(Timer(fn, schedule, expression))
    return timers


def check_connections(functions: list[Function]) -> None:
    for fn in functions:
        connections = [o.connection for o in fn.outputs]
        if fn.kind == "queue":
            connections.append(fn.connection)
        for connection in connections:
            if connection != DEFAULT_CONNECTION:
                raise StartupError(
                    f"function {fn.name}: connection {connection!r} is not supported locally "
                    f"(use {DEFAULT_CONNECTION})"
                )


def listing(functions: list[Function], timers: list[Timer], base: str, prefix: str) -> str:
    schedules = {t.fn.name: t.expression for t in timers}
    lines = ["", "Functions:", ""]
    for fn in functions:
        if fn.kind == "http":
            path = "/".join(p for p in (prefix, fn.route.strip("/")) if p)
            lines.append(f"\t{fn.name}: [{','.join(fn.methods)}] {base}/{path}")
        elif fn.kind == "timer":
            lines.append(f"\t{fn.name}: timerTrigger ({schedules[fn.name]})")
        else:
            lines.append(f"\t{fn.name}: queueTrigger ({fn.queue})")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parent = os.getppid()  # instances > 0 and queue workers stop when it is gone
    root = Path(args.root).resolve()
    configure_logging()
    try:
        config: HostConfig = read_host_json(root)
        settings = load_environment(root)
        app = import_app(args.app, root)
        functions = index(app)
        check_connections(functions)
        timers = resolve_timers(functions)
        routes = build_routes(functions)
        keys = Keys.from_settings(os.environ, [fn.name for fn in functions if fn.kind == "http"])
        processes = worker_process_count()
        instances = instance_count()
        lease_period = lease_seconds() if instances > 1 and timers else 0
    except (ConfigError, StartupError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except Exception:
        traceback.print_exc()
        print(f"error: {args.app} failed to load (see above)", file=sys.stderr, flush=True)
        return 1

    stores: dict[str, QueueStore] = {}
    stores_lock = threading.Lock()

    def store(connection: str) -> QueueStore:
        with stores_lock:
            if connection not in stores:
                stores[connection] = QueueStore.from_settings(settings.storage)
            return stores[connection]

    if instances > 1:
        _Formatter.label = f"instance={args.instance} "
    invoker = Invoker(store, InFlight())
    if args.queue_worker:
        return serve_queues(functions, config, store, invoker, parent)
    first = args.instance == 0
    if instances > 1:
        reason = port_taken(args.host, args.port) if first else None
        if reason:
            print(
                f"error: cannot serve on {args.host}:{args.port}: {reason}",
                file=sys.stderr,
                flush=True,
            )
            invoker.close()
            return 1
    try:
        server = DevServer(
            (args.host, args.port),
            functions=functions,
            routes=routes,
            route_prefix=config.route_prefix,
            invoker=invoker,
            keys=keys,
            instance=args.instance,
            reuse_port=instances > 1,
        )
    except OSError as exc:
        print(f"error: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr, flush=True)
        invoker.close()
        return 1

    port = int(server.server_address[1])  # --port 0: the one the system chose
    base = f"http://{args.host}:{port}"
    if first:
        print(listing(functions, timers, base, config.route_prefix), flush=True)
        if not keys.enforced:
            print(
                "no FUNCTIONS_KEY: serving loopback only (requests from other hosts, proxies and "
                "tunnels get 403; set FUNCTIONS_KEY to serve them)",
                flush=True,
            )

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    leases: TimerLeases | None = None
    if lease_period:
        tables = TableStore.from_settings(settings.storage)
        names = [t.fn.name for t in timers]
        leases = TimerLeases(tables, host_id(port), names, lease_period, stop)
    workers: list[threading.Thread] = [
        TimerThread(t.fn, t.schedule, invoker, stop, leases.leases[t.fn.name] if leases else None)
        for t in timers
    ]
    timer_threads = list(workers)
    workers += queue_pollers(functions, config, store, invoker, stop)
    serving = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    serving.start()
    if leases:
        leases.start()
    for worker in workers:
        worker.start()
    helpers = start_queue_workers(args, processes - 1)
    others: list[subprocess.Popen[bytes]] = []
    failed = False
    if first and instances > 1:
        try:
            others = start_instances(argv, port, instances, stop)
        except StartupError as exc:
            if not stop.is_set():  # not Ctrl-C during start-up
                print(f"error: {exc}", file=sys.stderr, flush=True)
                failed = True
                stop.set()
    elif not first:
        report_ready(args.ready_fd, args.instance)

    if first and not stop.is_set():
        parts = [f"{instances} instances"] if instances > 1 else []
        if processes > 1:
            parts.append(f"{processes} worker processes" + (" each" if instances > 1 else ""))
        if instances > 1:
            pids = [os.getpid(), *(p.pid for p in others)]
            for k, pid in enumerate(pids):
                print(f"Instance {k}: pid {pid}", flush=True)
        extra = f" ({', '.join(parts)})" if parts else ""
        print(f"Host started: {base}{extra}", flush=True)

    gone: set[int] = set()
    while not stop.wait(0.5):
        if not first and os.getppid() != parent:  # the first instance is gone: stop too
            stop.set()
        for k, process in enumerate(others, start=1):
            if k not in gone and process.poll() is not None:
                gone.add(k)
                logging.getLogger("devhost").warning(
                    "instance %d (pid %d) exited with code %s; the others go on",
                    k,
                    process.pid,
                    process.returncode,
                )

    if first:
        print("Stopping...", flush=True)
    for process in [*others, *helpers]:  # they stop alongside this one
        if process.poll() is None:
            process.terminate()
    server.stopping = True
    server.shutdown()
    server.server_close()
    deadline = time.monotonic() + SHUTDOWN_GRACE
    for worker in workers:
        worker.join(timeout=max(0.0, deadline - time.monotonic()))
    if leases and not any(t.is_alive() for t in timer_threads):
        leases.release()
    if not invoker.inflight.wait_idle(max(0.0, deadline - time.monotonic())):
        logging.getLogger("devhost").warning(
            "invocations still running after %.0f s; stopping anyway", SHUTDOWN_GRACE
        )
    invoker.close()
    stop_processes([*others, *helpers], grace=max(0.0, deadline - time.monotonic()))
    if first:
        print("Host stopped.", flush=True)
    return 1 if failed else 0


def queue_pollers(
    functions: list[Function],
    config: HostConfig,
    store: Callable[[str], QueueStore],
    invoker: Invoker,
    stop: threading.Event,
) -> list[QueuePoller]:
    return [
        QueuePoller(fn, store(fn.connection), config.queues, invoker, stop)
        for fn in functions
        if fn.kind == "queue"
    ]


def serve_queues(
    functions: list[Function],
    config: HostConfig,
    store: Callable[[str], QueueStore],
    invoker: Invoker,
    parent: int,
) -> int:
    """An extra worker process: the queue triggers only, until stopped or orphaned."""
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    pollers = queue_pollers(functions, config, store, invoker, stop)
    for poller in pollers:
        poller.start()
    print(f"Queue worker {os.getpid()} started", flush=True)
    while not stop.wait(0.5):
        if os.getppid() != parent:  # the host is gone: do not keep taking work
            stop.set()
    deadline = time.monotonic() + SHUTDOWN_GRACE
    for poller in pollers:
        poller.join(timeout=max(0.0, deadline - time.monotonic()))
    invoker.inflight.wait_idle(max(0.0, deadline - time.monotonic()))
    invoker.close()
    return 0
