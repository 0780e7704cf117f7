"""The HTTPS server and the `Sandbox` object that tests and the run script start."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sandbox import defaults
from sandbox.client import SandboxControl
from sandbox.control import Control
from sandbox.defaults import Settings
from sandbox.graph import GraphApi, Subscriptions, build_graph
from sandbox.keyvault import KeyVault
from sandbox.limits import Faults, Throttle
from sandbox.login import Login
from sandbox.messages import ConnectionFault, EntraError, GraphError, Headers, Request, Response
from sandbox.notifications import Notifier
from sandbox.requestlog import RequestLog
from sandbox.state import Tenant
from sandbox.tls import ensure_tls, load_or_create_signing_key
from sandbox.tokens import TokenIssuer

log = logging.getLogger("sandbox")

MAX_BODY = 8 * 1024 * 1024
MSI_PATH = "/_sandbox/msi/token"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Handler)
        self.sandbox = sandbox
        self.resets: set[int] = set()
        self.resets_lock = threading.Lock()

    def shutdown_request(self, request: Any) -> None:
        with self.resets_lock:
            reset = id(request) in self.resets
            self.resets.discard(id(request))
        if reset:
            with contextlib.suppress(OSError):
                request.close()
            return
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection error from %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "Microsoft-IIS/10.0"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(120)
        # Headers and body go out in separate writes; without this, Nagle's algorithm and the
        # client's delayed ACK add 40 ms to every answer.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(
                Response.json(
                    413,
                    {
                        "error": {
                            "code": "RequestEntityTooLarge",
                            "message": "The request is too large.",
                        }
                    },
                )
            )
            return
        body = self.rfile.read(length) if length else b""
        host = self.headers.get("Host") or self.server.sandbox.netloc
        request = Request.build(
            self.command, self.path, Headers(self.headers.items()), body, f"https://{host}"
        )
        try:
            response = self.server.sandbox.dispatch(request)
        except ConnectionFault:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            with self.server.resets_lock:
                self.server.resets.add(id(self.connection))
            return
        self._send(response)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)

    def finish(self) -> None:
        with self.server.resets_lock:
            reset = id(self.connection) in self.server.resets
        if not reset:
            super().finish()

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = _serve  # noqa: N815


class Sandbox:
    """A simulated Microsoft 365 tenant (Entra login + Graph v1.0) over HTTPS.

    >>> sb = Sandbox(state_dir=Path(".run/sandbox")).start()
    >>> sb.url, sb.ca_file, sb.tenant_id, sb.client_id, sb.client_secret
    >>> sb.control.add_mailbox("room.x@contoso.example", kind="room")
    >>> sb.stop()
    """

    def __init__(
        self,
        state_dir: Path | str = Path(".run/sandbox"),
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tenant_id: str = defaults.TENANT_ID,
        client_id: str = defaults.CLIENT_ID,
        client_secret: str = defaults.CLIENT_SECRET,
        seed: bool = True,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.host = host
        self.port = port
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.settings = Settings()
        if settings:
            unknown = self.settings.update(settings)
            if unknown:
                raise ValueError(f"unknown sandbox settings: {', '.join(unknown)}")
        self.tenant = Tenant(tenant_id, client_id, client_secret, self.settings)
        if seed:
            self.tenant.seed()
        self.tls = ensure_tls(self.state_dir, host)
        self.issuer = TokenIssuer(load_or_create_signing_key(self.state_dir))
        self.log = RequestLog(self._mailbox_address)
        self.throttle = Throttle(self.settings)
        self.faults = Faults()
        self.notifier = Notifier(self.settings)
        self.login = Login(self.tenant, self.issuer)
        self.vault = KeyVault(self.tenant, self.issuer, self.faults)
        self.graph: GraphApi
        self.subscriptions: Subscriptions
        self.graph, self.subscriptions = build_graph(
            self.tenant, self.issuer, self.throttle, self.faults, self.log, self.notifier
        )
        self.control_api = Control(
            self.tenant,
            self.throttle,
            self.faults,
            self.log,
            self.notifier,
            self.subscriptions,
            self.info,
            vault=self.vault,
        )
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._control: SandboxControl | None = None
        self._stopped = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Sandbox:
        if self._server is not None:
            raise RuntimeError("the sandbox is already running")
        if self._stopped:
            raise RuntimeError("a stopped sandbox cannot start again; create a new Sandbox")
        server = _Server((self.host, self.port), self)
        context = self.tls.server_context()
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sandbox:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self.notifier.stop()
        self._stopped = True

    def __enter__(self) -> Sandbox:
        return self if self._server is not None else self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------------------------

    @property
    def netloc(self) -> str:
        host = self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The https origin: GRAPH_ENDPOINT and AUTHORITY_HOST at once."""
        if self._server is None:
            raise RuntimeError("the sandbox is not running; call start() first")
        return f"https://{self.netloc}"

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_file

    @property
    def authority(self) -> str:
        return f"{self.url}/{self.tenant_id}"

    @property
    def msi_endpoint(self) -> str:
        """App Service style IDENTITY_ENDPOINT for managed-identity (federated) sign-in."""
        return self.url + MSI_PATH

    @property
    def key_vault_url(self) -> str:
        """KEY_VAULT_URL of the Key Vault double (the same origin; see sandbox/keyvault.py)."""
        return self.url

    @property
    def control(self) -> SandboxControl:
        if self._control is None:
            self._control = SandboxControl(self.url, self.ca_file)
        return self._control

    def env(self) -> dict[str, str]:
        """Settings that point the product at this sandbox."""
        return {
            "TENANT_ID": self.tenant_id,
            "CLIENT_ID": self.client_id,
            "CLIENT_SECRET": self.client_secret,
            "CREDENTIAL_MODE": "secret",
            "GRAPH_ENDPOINT": self.url,
            "AUTHORITY_HOST": self.url,
            "REQUESTS_CA_BUNDLE": str(self.ca_file),
        }

    def info(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "graphEndpoint": self.url,
            "authorityHost": self.url,
            "authority": self.authority,
            "tokenEndpoint": f"{self.authority}/oauth2/v2.0/token",
            "msiEndpoint": self.msi_endpoint,
            "keyVaultUrl": self.key_vault_url,
            "caFile": str(self.ca_file),
            "tenantId": self.tenant_id,
            "clientId": self.client_id,
            "managedIdentityClientId": defaults.MANAGED_IDENTITY_CLIENT_ID,
            "settings": self.settings.to_dict(),
        }

    # -- dispatch --------------------------------------------------------------------------

    def _mailbox_address(self, key: str) -> str:
        with self.tenant.lock:
            found = self.tenant.lookup(key)
            return found.address.lower() if found else key.lower()

    def dispatch(self, request: Request) -> Response:
        path = request.path
        if path.startswith(Control.PREFIX) and path != MSI_PATH:
            return self.control_api.handle(request)
        started = time.monotonic()
        kind = "graph"
        response: Response | None = None
        error: str | None = None
        try:
            if path.startswith(GraphApi.PREFIX + "/") or path == GraphApi.PREFIX:
                response = self.graph.handle(request)
            elif self.vault.handles(path):
                kind = "keyvault"
                response = self.vault.handle(request)
            elif path == MSI_PATH:
                kind = "msi"
                response = self._login_call(request, msi=True)
            elif self.login.handles(path):
                kind = "login"
                response = self._login_call(request, msi=False)
            else:
                kind = "other"
                response = Response.json(
                    404, {"error": {"code": "NotFound", "message": f"No resource at {path}."}}
                )
            return response
        except ConnectionFault as fault:
            error = f"connection {fault.kind} (fault {fault.fault_id})"
            raise
        finally:
            self.log.record(request, response, kind, started, time.monotonic(), error=error)

    def _login_call(self, request: Request, msi: bool) -> Response:
        fault = self.faults.match(request.method, request.path)
        try:
            if fault is not None:
                Faults.apply(fault)
            if msi and self.vault.wants_token(request):
                response = self.vault.managed_identity_token(request)
            else:
                response = (
                    self.login.managed_identity_token(request)
                    if msi
                    else self.login.handle(request)
                )
        except EntraError as error:
            response = error.response(request)
        except GraphError as error:
            response = error.response(request)
        response.fault = fault.id if fault is not None else None
        return response
