"""Run the product locally: Azurite (in memory), the local function host and, unless a real
tenant is configured, the simulated Microsoft 365 tenant and booking platform.

Started by `make run`. Prints the URLs, then waits; Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devhost.azurite import DEFAULT_PORTS, Azurite, port_open  # noqa: E402
from sync_core.config import merged_environment  # noqa: E402

LOOPBACK = ("https://127.0.0.1", "https://localhost")
SANDBOX_STATE = ROOT / ".run" / "sandbox"


def wait_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if process.poll() is not None:
            raise SystemExit(f"error: {what} exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"error: {what} did not open port {port} within {timeout:.0f} s")
        time.sleep(0.1)


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(
                f"error: the local function host exited with code {process.returncode}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:  # noqa: S310 - loopback
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"error: {url} did not answer within {timeout:.0f} s")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # Explicit handlers: a shell may start us with SIGINT ignored (background jobs), and
    # SIGTERM (from a process manager) should stop everything as cleanly as Ctrl-C does.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=7071, help="port of the function host")
    args = parser.parse_args()

    azurite: Azurite | None = None
    if all(port_open(p) for p in DEFAULT_PORTS):
        print("Azurite is already running on ports 10000-10002; using it.", flush=True)
    else:
        azurite = Azurite(ports=DEFAULT_PORTS, log=ROOT / ".run" / "azurite.log")
        (ROOT / ".run").mkdir(exist_ok=True)
        azurite.start()
        print("Azurite (in memory): blob :10000, queue :10001, table :10002", flush=True)

    env = os.environ.copy()
    settings = merged_environment(env, ROOT / "local.settings.json")
    authority = settings.get("AUTHORITY_HOST", "")
    simulated = authority.startswith(LOOPBACK)
    base = f"http://127.0.0.1:{args.port}"
    children: list[subprocess.Popen[bytes]] = []
    try:
        if simulated:
            port = int(authority.rsplit(":", 1)[1]) if authority.count(":") == 2 else 443
            tenant = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sandbox",
                    "--port",
                    str(port),
                    "--state-dir",
                    str(SANDBOX_STATE),
                    "--product-url",
                    base,
                ],
                cwd=ROOT,
                env=env,
            )
            children.append(tenant)
            wait_port(port, tenant, "the simulated tenant")
            env["REQUESTS_CA_BUNDLE"] = str(SANDBOX_STATE / "ca.pem")
            print(
                f"No real tenant configured (AUTHORITY_HOST is {authority}): "
                "using the simulated Microsoft 365 tenant and booking platform.",
                flush=True,
            )
        host = subprocess.Popen(
            [sys.executable, "-m", "devhost", "--port", str(args.port)], cwd=ROOT, env=env
        )
        children.append(host)
        wait_for(f"{base}/api/health", host, timeout=30)
        lines = [
            "",
            "Ready.",
            f"  health:    {base}/api/health",
            f"  mappings:  {base}/api/admin/mappings",
        ]
        if simulated:
            lines += [
                f"  tenant:    {authority} (rooms: {authority}/_sandbox/mailboxes)",
                "  platform:  http://127.0.0.1:9080/ (what the service sent)",
            ]
        lines.append("Press Ctrl-C to stop.")
        print("\n".join(lines), flush=True)
        host.wait()
        return host.returncode or 0
    except KeyboardInterrupt:
        return 0
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
                try:
                    child.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    child.kill()
        if azurite:
            azurite.stop()
        print("Stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
