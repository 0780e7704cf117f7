"""`python -m sandbox`: the simulated Microsoft 365 tenant and booking platform for local runs.

Writes its CA (ca.pem), server certificate and token-signing key into the state directory (reused
on the next start), serves Entra login + Graph on https://HOST:PORT and the booking platform on
http://HOST:PLATFORM_PORT, prints what it serves, and stops cleanly on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from sandbox import defaults
from sandbox.platform import PlatformSim
from sandbox.server import Sandbox


def _settings() -> dict[str, str]:
    try:
        from sync_core.config import merged_environment
    except ImportError:  # pragma: no cover - the product package is part of this repo
        import os

        return dict(os.environ)
    return merged_environment()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=defaults.DEFAULT_PORT)
    parser.add_argument("--state-dir", type=Path, default=Path(".run/sandbox"))
    parser.add_argument("--platform-port", type=int, default=9080)
    parser.add_argument("--product-url", default="http://127.0.0.1:7071")
    parser.add_argument("--no-seed", action="store_true", help="start with no rooms or people")
    parser.add_argument("--no-platform", action="store_true", help="serve the tenant only")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)

    env = _settings()
    sandbox = Sandbox(
        state_dir=args.state_dir,
        host=args.host,
        port=args.port,
        tenant_id=env.get("TENANT_ID") or defaults.TENANT_ID,
        client_id=env.get("CLIENT_ID") or defaults.CLIENT_ID,
        client_secret=env.get("CLIENT_SECRET") or defaults.CLIENT_SECRET,
        seed=not args.no_seed,
    )
    try:
        sandbox.start()
    except OSError as error:
        print(f"error: cannot serve on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    platform: PlatformSim | None = None
    if not args.no_platform:
        missing = [
            name
            for name in ("PLATFORM_WEBHOOK_SECRET", "BOOKING_WEBHOOK_SECRET")
            if not env.get(name)
        ]
        if missing:
            sandbox.stop()
            print(
                f"error: setting {missing[0]}: is missing (environment or local.settings.json)",
                file=sys.stderr,
            )
            return 2
        platform = PlatformSim(
            host=args.host,
            port=args.platform_port,
            platform_secret=env["PLATFORM_WEBHOOK_SECRET"],
            booking_secret=env["BOOKING_WEBHOOK_SECRET"],
            product_url=args.product_url,
            function_key=env.get("FUNCTIONS_KEY") or None,
        )
        try:
            platform.start()
        except OSError as error:
            sandbox.stop()
            print(
                f"error: cannot serve the platform on {args.host}:{args.platform_port}: {error}",
                file=sys.stderr,
            )
            return 1

    with sandbox.tenant.lock:
        rooms = sorted(m.address for m in sandbox.tenant.mailboxes.values() if m.kind == "room")
        people = sorted(m.address for m in sandbox.tenant.mailboxes.values() if m.kind == "user")
    lines = [
        "Simulated Microsoft 365 tenant",
        f"  Graph + login:  {sandbox.url}   (GRAPH_ENDPOINT = AUTHORITY_HOST)",
        f"  CA certificate: {sandbox.ca_file}   (REQUESTS_CA_BUNDLE)",
        f"  tenant {sandbox.tenant_id}, client {sandbox.client_id}",
        f"  control API:    {sandbox.url}/_sandbox/info",
        f"  rooms:  {', '.join(rooms) or '(none)'}",
        f"  people: {', '.join(people) or '(none)'}",
    ]
    if platform is not None:
        lines.append(
            f"Simulated booking platform: {platform.url} (webhooks in at "
            f"{platform.webhook_url}), sends to {args.product_url}"
        )
    lines.append("Press Ctrl-C to stop.")
    print("\n".join(lines), flush=True)

    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop.wait(3600):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if platform is not None:
            platform.stop()
        sandbox.stop()
        print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
