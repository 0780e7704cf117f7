"""`python -m sandbox`: starts the tenant and the platform, prints them, stops on Ctrl-C,
and keeps its CA across restarts."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from tests.conftest import ROOT, example_settings


def start(state_dir: Path) -> tuple[subprocess.Popen[str], list[str]]:
    env = {k: v for k, v in os.environ.items() if k not in ("GRAPH_ENDPOINT", "AUTHORITY_HOST")}
    env.update(example_settings())
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "--port",
            "0",
            "--platform-port",
            "0",
            "--state-dir",
            str(state_dir),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 30
    while not any("Press Ctrl-C" in line for line in lines):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the sandbox did not start:\n" + "\n".join(lines))
        time.sleep(0.05)
    return process, lines


def stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGINT)
    return process.wait(timeout=15)


def test_cli_serves_prints_and_stops(tmp_path: Path) -> None:
    state = tmp_path / "state"
    process, lines = start(state)
    try:
        text = "\n".join(lines)
        url = re.search(r"Graph \+ login:\s+(https://\S+)", text)
        assert url, text
        assert "room.berlin@contoso.example" in text
        assert "Simulated booking platform: http://127.0.0.1:" in text
        health = requests.get(
            f"{url.group(1)}/_sandbox/health", verify=str(state / "ca.pem"), timeout=10
        )
        assert health.json() == {"status": "ok"}
        info = requests.get(
            f"{url.group(1)}/_sandbox/info", verify=str(state / "ca.pem"), timeout=10
        )
        assert info.json()["tenantId"] == example_settings()["TENANT_ID"]
    finally:
        code = stop(process)
    assert code == 0
    assert any(line == "Stopped." for line in lines)
    ca = (state / "ca.pem").read_bytes()
    again, _ = start(state)
    assert stop(again) == 0
    assert (state / "ca.pem").read_bytes() == ca  # reused, so a trusted CA stays trusted
