"""The storage clients' HTTP transport, against a real Azurite and plain local sockets."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from azure.core.exceptions import (
    ServiceRequestError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest
from azure.data.tables import TableServiceClient

from devhost.azurite import Azurite, free_port
from sync_core.config import StorageSettings
from sync_core.store.queues import QueueStore, decode_message
from sync_core.store.tables import TableStore
from sync_core.store.transport import StorageTransport, storage_transport


def test_tables_and_queues_round_trip_over_it(storage: str) -> None:
    settings = StorageSettings(connection_string=storage)
    tables, queues = TableStore.from_settings(settings), QueueStore.from_settings(settings)
    text = "Grüße aus dem Raum 4.2, 会議室 😀"
    tables.insert("roundtrip", {"PartitionKey": "p", "RowKey": "r", "Text": text, "N": 7})
    tables.upsert_many("roundtrip", [{"PartitionKey": "p", "RowKey": f"b{i}"} for i in range(5)])
    stored = tables.get("roundtrip", "p", "r")
    assert stored is not None
    assert (stored["Text"], stored["N"]) == (text, 7)
    assert len(list(tables.query("roundtrip", "PartitionKey eq @pk", {"pk": "p"}))) == 6
    assert tables.delete("roundtrip", "p", "r") is True

    queues.send("roundtrip", {"text": text})
    (message,) = queues.queue("roundtrip").receive_messages(max_messages=5)
    assert json.loads(decode_message(message.content)) == {"text": text}
    queues.queue("roundtrip").delete_message(message)
    assert queues.depth("roundtrip") == 0


def test_it_reuses_one_connection_for_calls_in_a_row(storage: str) -> None:
    transport = StorageTransport()
    client = TableServiceClient.from_connection_string(storage, transport=transport)
    store = TableStore(client)
    for i in range(20):
        store.upsert("reuse", {"PartitionKey": "p", "RowKey": str(i)})
        assert store.get("reuse", "p", str(i)) is not None
    assert [len(idle) for idle in transport._idle.values()] == [1]


def test_a_connection_the_server_closed_is_replaced() -> None:
    server = Azurite().start()
    try:
        transport = StorageTransport()
        url = f"http://127.0.0.1:{server.ports[2]}/devstoreaccount1/Tables"
        # Unsigned, so storage refuses it: any HTTP answer shows the connection worked.
        assert transport.send(HttpRequest("GET", url)).status_code == 403
        server.restart()  # the idle keep-alive connection is now closed by the other side
        assert transport.send(HttpRequest("GET", url)).status_code == 403
    finally:
        server.stop()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts and reads, but never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
                accepted.append(connection)
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def test_a_server_that_does_not_answer_times_out(silent_server: int) -> None:
    transport = StorageTransport()
    started = time.monotonic()
    with pytest.raises(ServiceResponseTimeoutError):
        transport.send(
            HttpRequest("GET", f"http://127.0.0.1:{silent_server}/devstoreaccount1/x"),
            read_timeout=0.5,
        )
    assert time.monotonic() - started < 5


def test_nothing_listening_is_a_request_error() -> None:
    with pytest.raises(ServiceRequestError) as raised:
        StorageTransport().send(HttpRequest("GET", f"http://127.0.0.1:{free_port()}/x"))
    assert not isinstance(raised.value, ServiceResponseError)


def test_a_proxy_in_the_environment_keeps_the_requests_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    assert isinstance(storage_transport(), StorageTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.contoso.example:3128")
    assert isinstance(storage_transport(), RequestsTransport)
