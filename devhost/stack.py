"""The product's local stack: Azurite, the simulated Microsoft 365 tenant, the simulated booking
platform and the local function host, started on loopback ports and wired to each other.

`make run`, the tests and the benchmarks all start these parts through this module:

- ``HostProcess``: ``python -m devhost``, the function app, in a process of its own;
- ``TenantProcess``: ``python -m sandbox``, the simulated tenant (and optionally the platform)
  in a process of its own, as Graph is elsewhere in production;
- ``start_platform``: the simulated booking platform, served from this process;
- ``Stack``: all of it at once, on free ports.

The tests start the tenant in their own process instead (``sandbox.Sandbox``), to reach into it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import requests

from devhost.azurite import Azurite, free_port, port_open
from sandbox.client import SandboxControl
from sandbox.platform import PlatformSim

ROOT = Path(__file__).resolve().parent.parent


class StackError(RuntimeError):
    """A part of the stack did not start; the message says which and why."""


def example_settings() -> dict[str, str]:
    """The safe local values of local.settings.example.json."""
    values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    return {k: str(v) for k, v in values.items()}


def wait_port(
    port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 30.0
) -> None:
    """Wait until ``process`` listens on ``port``; StackError if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if process.poll() is not None:
            raise StackError(f"{what} exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise StackError(f"{what} did not open port {port} within {timeout:.0f} s")
        time.sleep(0.05)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Ctrl-C, as a person would stop it (it shuts down cleanly); killed if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_platform(
    settings: Mapping[str, str], function_key: str | None = None, product_url: str | None = None
) -> PlatformSim:
    """The simulated booking platform, with the webhook secrets of ``settings``."""
    return PlatformSim(
        platform_secret=settings["PLATFORM_WEBHOOK_SECRET"],
        booking_secret=settings["BOOKING_WEBHOOK_SECRET"],
        function_key=function_key,
        product_url=product_url,
    ).start()


INSTANCE_LINE = re.compile(r"^Instance (\d+): pid (\d+)$", re.MULTILINE)


class HostProcess:
    """``python -m devhost``: the function app served on ``base``.

    Isolated (tests, benchmarks): the shell's ``AzureWebJobs*`` settings are left out, ``settings``
    are what the host runs with, and PUBLIC_BASE_URL is this host (Graph calls it back here). Not
    isolated (`make run`): ``settings`` is the whole environment and local.settings.json, read by
    the host, fills in the rest.

    The output goes to ``log`` (a new temporary file when None), or to this console.

    ``instances`` > 1 (``DEVHOST_INSTANCES``; otherwise what ``settings`` say, else 1) scales the
    app out: ``process`` is instance 0, which starts the others on the same port (the kernel
    spreads connections over them; each answer names its instance in ``x-devhost-instance``)
    and stops them with itself. Instance 0 prints ``Instance K: pid P`` for each instance, then
    ``Host started``; :meth:`wait_ready` waits for that line, :meth:`instance_pids` reads the
    pids from the log and :meth:`kill_instance` SIGKILLs one instance (the others go on
    serving, and take over its timers once their leases lapse).
    """

    def __init__(
        self,
        settings: Mapping[str, str],
        *args: str,
        port: int | None = None,
        cwd: Path = ROOT,
        log: Path | None = None,
        console: bool = False,
        isolated: bool = True,
        boot: str | None = None,
        instances: int = 1,
    ) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = dict(settings)
        if instances != 1 or (isolated and "DEVHOST_INSTANCES" not in self.env):
            self.env["DEVHOST_INSTANCES"] = str(instances)  # not the shell's, when isolated
        raw = self.env.get("DEVHOST_INSTANCES", "1").strip()
        self.instances = int(raw) if raw.isdigit() else 1  # a bad value: the host says so
        if isolated:
            self.env["PUBLIC_BASE_URL"] = self.base
            full_env = {k: v for k, v in os.environ.items() if not k.startswith("AzureWebJobs")}
            full_env.update(self.env)
        else:
            full_env = self.env
        self.log: Path | None = None
        out: IO[bytes] | None = None  # None: this console
        if not console:
            # A file, not a pipe: nobody reads it while the host runs, and a full pipe would
            # block the host.
            if log is None:
                out = tempfile.NamedTemporaryFile(prefix="devhost-", suffix=".log", delete=False)  # noqa: SIM115
                log = Path(out.name)
            else:
                out = log.open("ab")
            self.log = log
        # ``boot``: Python code that starts the host in its place (the soak shortens timeouts).
        start = ["-c", boot] if boot else ["-m", "devhost"]
        self.process = subprocess.Popen(
            [sys.executable, *start, "--port", str(self.port), *args],
            cwd=cwd,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
        )
        if out is not None:
            out.close()  # the host has its own copy

    def output(self) -> str:
        """What the host wrote so far ('' when it writes to the console)."""
        return self.log.read_text(errors="replace") if self.log else ""

    def _exited(self) -> StackError:
        message = f"the local function host exited with code {self.process.returncode}"
        output = self.output()
        return StackError(f"{message}:\n{output}" if output else message)

    def wait_ready(self, timeout: float = 30.0) -> HostProcess:
        """Wait until the host accepts connections (with several instances and a log: until
        every instance serves)."""
        deadline = time.monotonic() + timeout
        try:
            wait_port(self.port, self.process, "the local function host", timeout)
        except StackError:
            if self.process.poll() is not None:
                raise self._exited() from None
            raise
        if self.instances > 1 and self.log:
            while "Host started" not in self.output():
                if self.process.poll() is not None:
                    raise self._exited()
                if time.monotonic() > deadline:
                    raise StackError(
                        f"the {self.instances} instances did not start within {timeout:.0f} s"
                    )
                time.sleep(0.05)
        return self

    def instance_pids(self) -> dict[int, int]:
        """Instance number → pid, from the lines instance 0 prints before ``Host started``
        (call after :meth:`wait_ready`; needs a log, not the console)."""
        if self.instances == 1:
            return {0: self.process.pid}
        if not self.log:
            raise StackError("the instances' pids are read from the log; this host has none")
        pids = {int(k): int(pid) for k, pid in INSTANCE_LINE.findall(self.output())}
        if len(pids) != self.instances:
            raise StackError(f"the log names {len(pids)} of {self.instances} instances")
        return pids

    def kill_instance(self, instance: int, timeout: float = 10.0) -> None:
        """SIGKILL one instance and wait until it is gone: reaped by instance 0 (within half a
        second), so all its threads have exited and its socket has left the port (a zombie
        leader's other threads may still hold it). The others go on. Instance 0 is the launched
        process: see :meth:`kill`."""
        if instance == 0:
            self.kill()
            return
        pid = self.instance_pids()[instance]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while Path(f"/proc/{pid}").exists():
            if time.monotonic() > deadline:
                raise StackError(f"instance {instance} (pid {pid}) still runs after SIGKILL")
            time.sleep(0.05)

    def wait_healthy(self, timeout: float = 30.0) -> HostProcess:
        """Wait until the product's health endpoint answers 200."""
        url = f"{self.base}/api/health"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise self._exited()
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:  # noqa: S310 - loopback
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise StackError(f"{url} did not answer within {timeout:.0f} s")

    def map(self, resource_id: str, mailbox: str, privacy: str | None = "full") -> None:
        """Map a resource through the admin API (which also subscribes to the mailbox)."""
        key = self.env.get("FUNCTIONS_KEY", "")
        body = {"mailbox": mailbox} | ({"privacy": privacy} if privacy else {})
        requests.put(
            f"{self.base}/api/admin/mappings/{resource_id}",
            json=body,
            headers={"x-functions-key": key},
            timeout=30,
        ).raise_for_status()

    def kill(self) -> None:
        """SIGKILL: no clean shutdown; the messages it had fetched stay invisible."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> str:
        """Stop the host; return what it wrote."""
        stop_process(self.process)
        return self.output()


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class TenantProcess:
    """``python -m sandbox``: the simulated tenant on ``url``, its state (CA, keys) in ``state``.

    With ``product_url`` it also serves the simulated booking platform (on its port 9080), which
    sends to that function host; otherwise only the tenant. ``console`` shows its output here.
    """

    def __init__(
        self,
        state: Path,
        port: int | None = None,
        *,
        product_url: str | None = None,
        console: bool = False,
    ) -> None:
        self.state = state
        self.port = port or free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.ca_file = state / "ca.pem"
        self.product_url = product_url
        self.console = console
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> TenantProcess:
        platform = ["--product-url", self.product_url] if self.product_url else ["--no-platform"]
        quiet = None if self.console else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandbox",
                "--port",
                str(self.port),
                "--state-dir",
                str(self.state),
                *platform,
            ],
            cwd=ROOT,
            stdout=quiet,
            stderr=quiet,
        )
        wait_port(self.port, self.process, "the simulated tenant", timeout)
        self.control = SandboxControl(self.url, self.ca_file)
        return self

    def env(self) -> dict[str, str]:
        """Settings that point the product at this tenant."""
        info = self.control.info()
        return {
            "TENANT_ID": info["tenantId"],
            "CLIENT_ID": info["clientId"],
            "GRAPH_ENDPOINT": self.url,
            "AUTHORITY_HOST": self.url,
            "REQUESTS_CA_BUNDLE": str(self.ca_file),
        }

    def stop(self) -> None:
        if self.process:
            stop_process(self.process)


class Stack:
    """The whole product locally on free ports: an in-memory Azurite, the tenant in its own
    process, the platform in this one and the function host; ``base`` is the function host.

    ``values`` (the example settings) may be changed before ``start``.
    """

    def __init__(
        self, name: str, worker_processes: int = 1, *, function_key: str, instances: int = 1
    ) -> None:
        self.state = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.values: dict[str, Any] = example_settings()
        self.function_key = function_key
        self.worker_processes = worker_processes
        self.instances = instances

    def start(self) -> Stack:
        self.azurite = Azurite().start()
        self.tenant = TenantProcess(self.state / "m365").start()
        self.platform = start_platform(self.values, self.function_key)
        settings = {
            **{k: str(v) for k, v in self.values.items()},
            **self.tenant.env(),
            "AzureWebJobsStorage": self.azurite.connection_string,
            "PLATFORM_WEBHOOK_URL": self.platform.webhook_url,
            "FUNCTIONS_KEY": self.function_key,
            "FUNCTIONS_WORKER_PROCESS_COUNT": str(self.worker_processes),
        }
        self.host = HostProcess(
            settings, log=self.state / "devhost.log", instances=self.instances
        ).wait_ready()
        self.base = self.host.base
        self.env = self.host.env
        self.platform.product_url = self.base
        return self

    @property
    def log(self) -> Path | None:
        return self.host.log

    def map(self, resource_id: str, mailbox: str, privacy: str = "full") -> None:
        self.host.map(resource_id, mailbox, privacy)

    def stop(self) -> None:
        self.host.stop()
        self.platform.stop()
        self.tenant.stop()
        self.azurite.stop()
