"""Microsoft's Graph SDK (msgraph-sdk) pointed at the sandbox, set up as a real client would be:
azure-identity's async ClientSecretCredential with the sandbox as authority, msgraph-core's
default middleware (retry, redirect, parameter decoding, headers, telemetry) on an httpx client
that trusts the sandbox CA, and the request adapter's base URL at the sandbox's /v1.0.

The innermost transport records every request as it goes on the wire (after the middleware),
so tests can assert the exact URLs the SDK sends."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import httpx
from azure.identity.aio import ClientSecretCredential
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_http.kiota_client_factory import DEFAULT_CONNECTION_TIMEOUT, DEFAULT_REQUEST_TIMEOUT
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_request_adapter import options as sdk_options
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory

from sandbox import Sandbox


class RecordingTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, noting "METHOD /raw/path?query" of each request it sends."""

    def __init__(self, sent: list[str], ca_file: str) -> None:
        context = ssl.create_default_context(cafile=ca_file)
        super().__init__(verify=context, http2=True, trust_env=False)
        self.sent = sent

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(f"{request.method} {request.url.raw_path.decode('ascii')}")
        return await super().handle_async_request(request)


@asynccontextmanager
async def sdk_client(
    sb: Sandbox, sent: list[str] | None = None, scope: str | None = None
) -> AsyncIterator[GraphServiceClient]:
    """A GraphServiceClient talking to the sandbox (Graph requests are appended to `sent`);
    closes its credential and HTTP client on exit."""
    credential = ClientSecretCredential(
        sb.tenant_id,
        sb.client_id,
        sb.client_secret,
        authority=sb.url,
        disable_instance_discovery=True,
        connection_verify=str(sb.ca_file),
    )
    # What KiotaClientFactory.get_default_client() builds, plus the sandbox CA.
    transport = RecordingTransport([] if sent is None else sent, str(sb.ca_file))
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(DEFAULT_REQUEST_TIMEOUT, connect=DEFAULT_CONNECTION_TIMEOUT),
        http2=True,
        transport=transport,
        trust_env=False,
    )
    http = GraphClientFactory.create_with_default_middleware(client=http, options=sdk_options)
    auth = AzureIdentityAuthenticationProvider(
        credential,
        scopes=[scope or f"{sb.url}/.default"],
        allowed_hosts=[str(urlsplit(sb.url).hostname)],
    )
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = f"{sb.url}/v1.0"
    try:
        yield GraphServiceClient(request_adapter=adapter)
    finally:
        await http.aclose()
        await credential.close()
