"""Start and stop Azurite (the Azure Storage emulator, installed from npm into ./node_modules)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from sync_core.config import DEVSTORE_ACCOUNT, DEVSTORE_KEY

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORTS = (10000, 10001, 10002)  # blob, queue, table


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def azurite_binary() -> str:
    local = ROOT / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if not found:
        raise RuntimeError(
            "Azurite is not installed: run `make setup` (npm installs it into ./node_modules)"
        )
    return found


def connection_string(blob: int, queue: int, table: int, host: str = "127.0.0.1") -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEVSTORE_ACCOUNT};AccountKey={DEVSTORE_KEY};"
        f"BlobEndpoint=http://{host}:{blob}/{DEVSTORE_ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue}/{DEVSTORE_ACCOUNT};"
        f"TableEndpoint=http://{host}:{table}/{DEVSTORE_ACCOUNT};"
    )


@dataclass
class Azurite:
    """One Azurite process: in memory, or persisted under ``location`` so it survives a restart."""

    ports: tuple[int, int, int] = field(
        default_factory=lambda: (free_port(), free_port(), free_port())
    )
    location: Path | None = None
    log: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return connection_string(*self.ports)

    def start(self, timeout: float = 30.0) -> Azurite:
        blob, queue, table = self.ports
        args = [
            azurite_binary(),
            "--blobPort",
            str(blob),
            "--queuePort",
            str(queue),
            "--tablePort",
            str(table),
            "--blobHost",
            "127.0.0.1",
            "--queueHost",
            "127.0.0.1",
            "--tableHost",
            "127.0.0.1",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--loose",
        ]
        if self.location:
            self.location.mkdir(parents=True, exist_ok=True)
            args += ["--location", str(self.location)]
        else:
            args.append("--inMemoryPersistence")
        if not self.log:
            args.append("--silent")  # no access log to format when nobody keeps it
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while not all(port_open(p) for p in self.ports):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Azurite exited with code {self.process.returncode} at start-up"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"Azurite did not open ports {self.ports} within {timeout:.0f} s"
                )
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()
