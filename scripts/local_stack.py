"""Run the product locally: Azurite (in memory), the local function host and, unless a real
tenant is configured, the simulated Microsoft 365 tenant and booking platform.

Started by `make run`. Prints the URLs, then waits; Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devhost.azurite import DEFAULT_PORTS, Azurite, port_open  # noqa: E402
from devhost.stack import HostProcess, StackError, TenantProcess  # noqa: E402
from sync_core.config import merged_environment  # noqa: E402

LOOPBACK = ("https://127.0.0.1", "https://localhost")
SANDBOX_STATE = ROOT / ".run" / "sandbox"


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
    tenant: TenantProcess | None = None
    host: HostProcess | None = None
    try:
        if simulated:
            port = int(authority.rsplit(":", 1)[1]) if authority.count(":") == 2 else 443
            tenant = TenantProcess(SANDBOX_STATE, port, product_url=base, console=True).start()
            env["REQUESTS_CA_BUNDLE"] = str(tenant.ca_file)
            print(
                f"No real tenant configured (AUTHORITY_HOST is {authority}): "
                "using the simulated Microsoft 365 tenant and booking platform.",
                flush=True,
            )
        # The environment as it is: local.settings.json, read by the host, fills in the rest.
        host = HostProcess(env, port=args.port, console=True, isolated=False)
        host.wait_healthy(timeout=30)
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
        return host.process.wait() or 0
    except StackError as error:
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt:
        return 0
    finally:
        for child in (host, tenant):
            if child:
                child.stop()
        if azurite:
            azurite.stop()
        print("Stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
