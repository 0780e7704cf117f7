"""Run the product locally: Azurite (in memory) and the local function host.

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

    host = subprocess.Popen(
        [sys.executable, "-m", "devhost", "--port", str(args.port)], cwd=ROOT, env=os.environ.copy()
    )
    base = f"http://127.0.0.1:{args.port}"
    try:
        wait_for(f"{base}/api/health", host, timeout=30)
        print(
            f"\nReady.\n  health:   {base}/api/health\n  mappings: {base}/api/admin/mappings\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        host.wait()
        return host.returncode or 0
    except KeyboardInterrupt:
        return 0
    finally:
        if host.poll() is None:
            host.send_signal(signal.SIGINT)
            try:
                host.wait(timeout=15)
            except subprocess.TimeoutExpired:
                host.kill()
        if azurite:
            azurite.stop()
        print("Stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
