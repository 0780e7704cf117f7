"""A simulated Microsoft 365 tenant (Entra login + Microsoft Graph v1.0 over HTTPS) and a
simulated booking platform, for local runs, tests and benchmarks. See docs/sandbox.md.

    from sandbox import Sandbox
    sb = Sandbox(state_dir=tmp_path).start()   # sb.url, sb.ca_file, sb.control, sb.env()
"""

from __future__ import annotations

from sandbox.client import ControlError, SandboxControl
from sandbox.defaults import CLIENT_ID, CLIENT_SECRET, DEFAULT_PORT, TENANT_ID, Settings
from sandbox.server import Sandbox
from sandbox.tls import ClientCertificate, make_client_certificate

__all__ = [
    "CLIENT_ID",
    "CLIENT_SECRET",
    "DEFAULT_PORT",
    "TENANT_ID",
    "ClientCertificate",
    "ControlError",
    "Sandbox",
    "SandboxControl",
    "Settings",
    "make_client_certificate",
]
