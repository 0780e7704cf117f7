"""Settings: every missing or malformed value gives one line naming the setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sync_core.config import DEVSTORE_CONNECTION_STRING, ConfigError, load_settings
from tests.conftest import example_settings
from tests.conftest import settings_with as load

NO_FILE = Path("/nonexistent/local.settings.json")


def test_example_settings_are_valid() -> None:
    settings = load_settings(example_settings(), NO_FILE)
    assert settings.storage.connection_string == DEVSTORE_CONNECTION_STRING
    assert settings.graph_scope == "https://127.0.0.1:9443/.default"
    assert settings.notification_url == "http://127.0.0.1:7071/api/graph/notifications"
    assert settings.authority_is_microsoft is False
    assert settings.sync_window_days == 180


def test_defaults_apply_when_optional_settings_are_absent() -> None:
    settings = load(
        GRAPH_ENDPOINT=None,
        AUTHORITY_HOST=None,
        SYNC_WINDOW_DAYS=None,
        CREDENTIAL_MODE=None,
        EVENT_CATEGORY=None,
        RENEW_SCHEDULE=None,
    )
    assert settings.graph_endpoint == "https://graph.microsoft.com"
    assert settings.authority_is_microsoft is True
    assert settings.credential_mode == "secret"
    assert settings.sync_window_days == 180
    assert settings.renew_schedule == "0 0 */6 * * *"


@pytest.mark.parametrize(
    ("overrides", "setting", "words"),
    [
        ({"AzureWebJobsStorage": None}, "AzureWebJobsStorage", "is missing"),
        ({"AzureWebJobsStorage": "nonsense"}, "AzureWebJobsStorage", "key=value"),
        ({"AzureWebJobsStorage": "AccountName=x"}, "AzureWebJobsStorage", "AccountKey"),
        ({"TENANT_ID": None}, "TENANT_ID", "is missing"),
        ({"TENANT_ID": "not a tenant"}, "TENANT_ID", "GUID"),
        ({"CLIENT_ID": ""}, "CLIENT_ID", "is missing"),
        ({"CLIENT_ID": "1234"}, "CLIENT_ID", "GUID"),
        ({"CREDENTIAL_MODE": "password"}, "CREDENTIAL_MODE", "secret, certificate"),
        ({"CLIENT_SECRET": None}, "CLIENT_SECRET", "is missing"),
        (
            {"CLIENT_SECRET": "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/s)"},
            "CLIENT_SECRET",
            "unresolved Key Vault reference",
        ),
        ({"CREDENTIAL_MODE": "certificate"}, "KEY_VAULT_URL", "is missing"),
        ({"CREDENTIAL_MODE": "managed_identity"}, "MANAGED_IDENTITY_CLIENT_ID", "is missing"),
        ({"KEY_VAULT_URL": "http://vault.example.com"}, "KEY_VAULT_URL", "https"),
        ({"GRAPH_ENDPOINT": "ftp://graph"}, "GRAPH_ENDPOINT", "http(s) URL"),
        ({"AUTHORITY_HOST": "http://127.0.0.1:9443"}, "AUTHORITY_HOST", "https"),
        ({"PUBLIC_BASE_URL": None}, "PUBLIC_BASE_URL", "is missing"),
        ({"PUBLIC_BASE_URL": "http://sync.contoso.com"}, "PUBLIC_BASE_URL", "https"),
        ({"PUBLIC_BASE_URL": "https://x.example.com/?a=1"}, "PUBLIC_BASE_URL", "query"),
        ({"BOOKING_WEBHOOK_SECRET": None}, "BOOKING_WEBHOOK_SECRET", "is missing"),
        ({"BOOKING_WEBHOOK_SECRET": "secret"}, "BOOKING_WEBHOOK_SECRET", "whsec_"),
        ({"BOOKING_WEBHOOK_SECRET": "whsec_***"}, "BOOKING_WEBHOOK_SECRET", "base64"),
        ({"BOOKING_WEBHOOK_SECRET": "whsec_c2hvcnQ="}, "BOOKING_WEBHOOK_SECRET", "24 to 64"),
        ({"PLATFORM_WEBHOOK_URL": "not-a-url"}, "PLATFORM_WEBHOOK_URL", "URL"),
        ({"PLATFORM_WEBHOOK_SECRET": None}, "PLATFORM_WEBHOOK_SECRET", "is missing"),
        ({"SYNC_WINDOW_DAYS": "abc"}, "SYNC_WINDOW_DAYS", "whole number"),
        ({"SYNC_WINDOW_DAYS": "0"}, "SYNC_WINDOW_DAYS", "between 1 and"),
        ({"EVENT_CATEGORY": "a" * 300}, "EVENT_CATEGORY", "255"),
        ({"SUBSCRIPTION_LIFETIME_MINUTES": "5"}, "SUBSCRIPTION_LIFETIME_MINUTES", "between"),
        ({"RENEW_SCHEDULE": "0 */6 * * *"}, "RENEW_SCHEDULE", "six-field"),
        ({"SWEEP_SCHEDULE": "0 99 * * * *"}, "SWEEP_SCHEDULE", "minute field"),
    ],
)
def test_each_bad_setting_is_named_in_one_line(
    overrides: dict[str, str | None], setting: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(**overrides)
    message = str(caught.value)
    assert caught.value.setting == setting
    assert message.startswith(f"setting {setting}: ")
    assert words in message
    assert "\n" not in message


def test_secret_values_are_never_quoted_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        load(BOOKING_WEBHOOK_SECRET="supersecretvalue")
    assert "supersecretvalue" not in str(caught.value)
    assert "16 characters" in str(caught.value)


def test_secrets_are_hidden_from_repr() -> None:
    settings = load_settings(example_settings(), NO_FILE)
    text = repr(settings)
    assert example_settings()["CLIENT_SECRET"] not in text
    assert example_settings()["BOOKING_WEBHOOK_SECRET"] not in text
    assert "AccountKey" not in text


def test_identity_based_storage() -> None:
    settings = load(
        AzureWebJobsStorage=None,
        AzureWebJobsStorage__accountName="contosocalsync",
        AzureWebJobsStorage__clientId="5f7f1c2e-1111-2222-3333-444455556666",
    )
    storage = settings.storage
    assert storage.connection_string is None
    assert storage.table_endpoint == "https://contosocalsync.table.core.windows.net"
    assert storage.queue_endpoint == "https://contosocalsync.queue.core.windows.net"
    assert storage.client_id == "5f7f1c2e-1111-2222-3333-444455556666"


# Storage endpoints by cloud: public, Azure China, Azure US Government.
CLOUD_SUFFIXES = ["core.windows.net", "core.chinacloudapi.cn", "core.usgovcloudapi.net"]
FAKE_KEY = "a2V5" * 22  # base64, not a real key


@pytest.mark.parametrize("suffix", CLOUD_SUFFIXES)
def test_connection_string_endpoints_follow_its_endpoint_suffix(suffix: str) -> None:
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

    value = (
        f"DefaultEndpointsProtocol=https;AccountName=contosocalsync;AccountKey={FAKE_KEY};"
        f"EndpointSuffix={suffix}"
    )
    storage = load(AzureWebJobsStorage=value).storage
    assert storage.connection_string == value
    assert storage.table_endpoint == f"https://contosocalsync.table.{suffix}"
    assert storage.queue_endpoint == f"https://contosocalsync.queue.{suffix}"
    # The storage clients read the connection string the same way.
    assert TableServiceClient.from_connection_string(value).url.rstrip("/") == (
        storage.table_endpoint
    )
    assert QueueServiceClient.from_connection_string(value).url.rstrip("/") == (
        storage.queue_endpoint
    )


def test_connection_string_without_suffix_is_the_public_cloud() -> None:
    storage = load(AzureWebJobsStorage=f"AccountName=contosocalsync;AccountKey={FAKE_KEY}").storage
    assert storage.table_endpoint == "https://contosocalsync.table.core.windows.net"
    assert storage.queue_endpoint == "https://contosocalsync.queue.core.windows.net"


def test_connection_string_explicit_endpoints_win() -> None:
    value = (
        f"AccountName=contosocalsync;AccountKey={FAKE_KEY};EndpointSuffix=core.chinacloudapi.cn;"
        "TableEndpoint=https://tables.example.net/;QueueEndpoint=https://queues.example.net"
    )
    storage = load(AzureWebJobsStorage=value).storage
    assert storage.table_endpoint == "https://tables.example.net"
    assert storage.queue_endpoint == "https://queues.example.net"


def test_development_storage_endpoints_are_azurite() -> None:
    storage = load(AzureWebJobsStorage="UseDevelopmentStorage=true").storage
    assert storage.connection_string == DEVSTORE_CONNECTION_STRING
    assert storage.table_endpoint == "http://127.0.0.1:10002/devstoreaccount1"
    assert storage.queue_endpoint == "http://127.0.0.1:10001/devstoreaccount1"


def test_connection_string_bad_suffix_is_named_without_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        load(AzureWebJobsStorage=f"AccountName=a1b;AccountKey={FAKE_KEY};EndpointSuffix=x/y")
    assert "EndpointSuffix" in str(caught.value)
    assert FAKE_KEY not in str(caught.value)


@pytest.mark.parametrize("suffix", CLOUD_SUFFIXES)
def test_identity_based_storage_reads_the_service_uris(suffix: str) -> None:
    storage = load(
        AzureWebJobsStorage=None,
        AzureWebJobsStorage__accountName="contosocalsync",
        AzureWebJobsStorage__tableServiceUri=f"https://contosocalsync.table.{suffix}/",
        AzureWebJobsStorage__queueServiceUri=f"https://contosocalsync.queue.{suffix}/",
    ).storage
    assert storage.connection_string is None
    assert storage.table_endpoint == f"https://contosocalsync.table.{suffix}"
    assert storage.queue_endpoint == f"https://contosocalsync.queue.{suffix}"


def test_identity_based_storage_with_service_uris_only() -> None:
    storage = load(
        AzureWebJobsStorage=None,
        AzureWebJobsStorage__tableServiceUri="https://tables.example.net",
        AzureWebJobsStorage__queueServiceUri="https://queues.example.net",
    ).storage
    assert (storage.table_endpoint, storage.queue_endpoint) == (
        "https://tables.example.net",
        "https://queues.example.net",
    )


def test_identity_based_storage_uri_must_be_https() -> None:
    with pytest.raises(ConfigError, match="AzureWebJobsStorage__queueServiceUri"):
        load(
            AzureWebJobsStorage=None,
            AzureWebJobsStorage__accountName="contosocalsync",
            AzureWebJobsStorage__queueServiceUri="http://contosocalsync.queue.core.chinacloudapi.cn",
        )


def test_environment_wins_over_local_settings(tmp_path: Path) -> None:
    file_values = example_settings() | {"SYNC_WINDOW_DAYS": "30", "EVENT_CATEGORY": "From file"}
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": file_values}))
    settings = load_settings({"SYNC_WINDOW_DAYS": "90"}, path)
    assert settings.sync_window_days == 90  # environment
    assert settings.event_category == "From file"  # file fills the rest


def test_unreadable_local_settings_is_named(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError) as caught:
        load_settings({}, path)
    assert str(path) in str(caught.value)
    assert "JSON" in str(caught.value)
