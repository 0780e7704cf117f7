"""What every end-to-end benchmark starts: Azurite, the simulated tenant (own process), the
simulated platform and the local function host, wired together on free ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devhost.azurite import Azurite, free_port, port_open  # noqa: E402
from sandbox import SandboxControl  # noqa: E402
from sandbox.platform import PlatformSim  # noqa: E402

KEY = "bench-key"
ROOM = "room.berlin@contoso.example"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def wait_until(predicate: Callable[[], Any], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


class TenantProcess:
    """``python -m sandbox`` in its own process, as Graph is elsewhere in production."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> TenantProcess:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandbox",
                "--port",
                str(self.port),
                "--state-dir",
                str(self.state),
                "--no-platform",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: port_open(self.port), 30)
        self.control = SandboxControl(self.url, self.state / "ca.pem")
        return self

    def env(self) -> dict[str, str]:
        info = self.control.info()
        return {
            "TENANT_ID": info["tenantId"],
            "CLIENT_ID": info["clientId"],
            "GRAPH_ENDPOINT": self.url,
            "AUTHORITY_HOST": self.url,
            "REQUESTS_CA_BUNDLE": str(self.state / "ca.pem"),
        }

    def stop(self) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=10)


class Stack:
    """The whole product locally; ``base`` is the function host, ``platform`` the simulator."""

    def __init__(self, name: str, worker_processes: int = 1) -> None:
        self.state = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        self.values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
        self.worker_processes = worker_processes

    def start(self) -> Stack:
        self.azurite = Azurite().start()
        self.tenant = TenantProcess(self.state / "m365").start()
        self.platform = PlatformSim(
            platform_secret=self.values["PLATFORM_WEBHOOK_SECRET"],
            booking_secret=self.values["BOOKING_WEBHOOK_SECRET"],
            function_key=KEY,
        ).start()
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.env = {
            **os.environ,
            **self.values,
            **self.tenant.env(),
            "AzureWebJobsStorage": self.azurite.connection_string,
            "PLATFORM_WEBHOOK_URL": self.platform.webhook_url,
            "PUBLIC_BASE_URL": self.base,
            "FUNCTIONS_KEY": KEY,
            "FUNCTIONS_WORKER_PROCESS_COUNT": str(self.worker_processes),
        }
        self.log = self.state / "devhost.log"
        self.host = subprocess.Popen(
            [sys.executable, "-m", "devhost", "--port", str(port)],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "wb"),  # noqa: SIM115
        )
        wait_until(lambda: port_open(port), 30)
        self.platform.product_url = self.base
        return self

    def map(self, resource_id: str, mailbox: str, privacy: str = "full") -> None:
        requests.put(
            f"{self.base}/api/admin/mappings/{resource_id}",
            json={"mailbox": mailbox, "privacy": privacy},
            headers={"x-functions-key": KEY},
            timeout=30,
        ).raise_for_status()

    def stop(self) -> None:
        self.host.terminate()
        self.host.wait(timeout=15)
        self.platform.stop()
        self.tenant.stop()
        self.azurite.stop()
