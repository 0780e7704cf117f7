"""Settings: environment first, then ``local.settings.json`` ``Values``, into one frozen object.

Every setting is validated when the app starts. A bad or missing one raises :class:`ConfigError`,
whose message is a single line naming the setting and what is wrong with it, so an admin reading
the log (or the local host's console) knows what to fix without a stack trace.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from sync_core import ncrontab

CredentialMode = Literal["secret", "certificate", "managed_identity"]
CREDENTIAL_MODES: tuple[CredentialMode, ...] = ("secret", "certificate", "managed_identity")
# Where Calendars.ReadWrite comes from (app-registration.sh --mailbox-scope, docs/permissions.md):
# rbac = Exchange RBAC for Applications, scoped (no Entra grant); policy = an Entra grant
# restricted by an ApplicationAccessPolicy; tenant = an Entra grant over every mailbox.
MailboxScope = Literal["rbac", "policy", "tenant"]
MAILBOX_SCOPES: tuple[MailboxScope, ...] = ("rbac", "policy", "tenant")

# Azurite's well-known development account (documented by Microsoft; not a secret).
DEVSTORE_ACCOUNT = "devstoreaccount1"
DEVSTORE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
DEVSTORE_CONNECTION_STRING = (
    f"DefaultEndpointsProtocol=http;AccountName={DEVSTORE_ACCOUNT};AccountKey={DEVSTORE_KEY};"
    f"BlobEndpoint=http://127.0.0.1:10000/{DEVSTORE_ACCOUNT};"
    f"QueueEndpoint=http://127.0.0.1:10001/{DEVSTORE_ACCOUNT};"
    f"TableEndpoint=http://127.0.0.1:10002/{DEVSTORE_ACCOUNT};"
)

# Login hosts run by Microsoft (public and sovereign clouds). For any other host, MSAL's
# instance discovery must be off, or it would call login.microsoftonline.com first.
MICROSOFT_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
    }
)

LOCAL_SETTINGS_FILE = "local.settings.json"

# Timer schedules are app settings (timer triggers say ``%RENEW_SCHEDULE%``); these are the values
# used when a deployment does not set them.
SCHEDULE_DEFAULTS = {
    "RENEW_SCHEDULE": "0 0 */6 * * *",
    "SWEEP_SCHEDULE": "0 0 * * * *",
    "RECOVER_SCHEDULE": "*/30 * * * * *",
    "CREDENTIAL_SCHEDULE": "0 30 3 * * *",
}


class ConfigError(Exception):
    """A setting is missing or malformed. ``str()`` is one line for the admin."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"setting {setting}: {problem}")
        self.setting = setting
        self.problem = problem


@dataclass(frozen=True)
class StorageSettings:
    """Where tables and queues live: a connection string, or endpoints reached with an identity."""

    connection_string: str | None = field(default=None, repr=False)
    # Service endpoints, without trailing slash. With a connection string they are what it names
    # (TableEndpoint/QueueEndpoint, else AccountName and EndpointSuffix); the clients read the
    # connection string itself.
    table_endpoint: str | None = None
    queue_endpoint: str | None = None
    # Client id of a user-assigned managed identity; None means the default Azure credential.
    client_id: str | None = None


@dataclass(frozen=True)
class Settings:
    storage: StorageSettings
    tenant_id: str
    client_id: str
    credential_mode: CredentialMode
    client_secret: str | None = field(repr=False)
    key_vault_url: str | None
    managed_identity_client_id: str | None
    graph_endpoint: str
    authority_host: str
    public_base_url: str
    booking_webhook_secret: str = field(repr=False)
    platform_webhook_url: str = ""
    platform_webhook_secret: str = field(repr=False, default="")
    sync_window_days: int = 180
    event_category: str = ""
    subscription_lifetime_minutes: int = 4230
    invite_guests: bool = False
    retry_attempts: int = 8
    retry_base_seconds: int = 5
    renew_schedule: str = SCHEDULE_DEFAULTS["RENEW_SCHEDULE"]
    sweep_schedule: str = SCHEDULE_DEFAULTS["SWEEP_SCHEDULE"]
    recover_schedule: str = SCHEDULE_DEFAULTS["RECOVER_SCHEDULE"]
    credential_schedule: str = SCHEDULE_DEFAULTS["CREDENTIAL_SCHEDULE"]
    key_vault_secret_name: str = "graph-client-secret"  # noqa: S105 - a name, not a value
    key_vault_certificate_name: str = "graph-client-certificate"
    rotation_enabled: bool = False
    secret_lifetime_days: int = 180
    mailbox_scope: MailboxScope = "tenant"

    @property
    def authority(self) -> str:
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def authority_is_microsoft(self) -> bool:
        return (urlsplit(self.authority_host).hostname or "") in MICROSOFT_AUTHORITY_HOSTS

    @property
    def graph_scope(self) -> str:
        """The client-credentials scope for the configured Graph root (sovereign clouds differ)."""
        return f"{self.graph_endpoint}/.default"

    @property
    def notification_url(self) -> str:
        return f"{self.public_base_url}/api/graph/notifications"

    @property
    def lifecycle_url(self) -> str:
        return f"{self.public_base_url}/api/graph/lifecycle"


def read_local_settings(path: Path) -> dict[str, str]:
    """The ``Values`` of ``local.settings.json`` as Core Tools reads them; {} without the file."""
    if not path.is_file():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(str(path), f"cannot be read as JSON ({exc})") from None
    values = document.get("Values", {}) if isinstance(document, dict) else None
    if not isinstance(values, dict):
        raise ConfigError(str(path), '"Values" must be an object of strings')
    return {str(k): "" if v is None else str(v) for k, v in values.items()}


def merged_environment(
    environ: Mapping[str, str] | None = None, local_settings: Path | None = None
) -> dict[str, str]:
    """Environment first, then ``local.settings.json`` for what the environment does not set."""
    env = dict(os.environ if environ is None else environ)
    path = local_settings if local_settings is not None else Path.cwd() / LOCAL_SETTINGS_FILE
    for name, value in read_local_settings(path).items():
        env.setdefault(name, value)
    return env


T = TypeVar("T")


class _Reader:
    """Reads one setting at a time so that every error names its setting."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def raw(self, name: str) -> str:
        return self.env.get(name, "").strip()

    def required(self, name: str, hint: str = "") -> str:
        value = self.raw(name)
        if not value:
            raise ConfigError(name, "is missing" + (f" ({hint})" if hint else ""))
        return value

    def optional(self, name: str, default: str = "") -> str:
        return self.raw(name) or default

    def check(self, name: str, value: str, parse: Callable[[str], T]) -> T:
        try:
            return parse(value)
        except ValueError as exc:
            raise ConfigError(name, f"{exc} (got {_shown(name, value)})") from None


def _shown(name: str, value: str) -> str:
    """Quote a bad value in an error unless it is secret."""
    if any(word in name for word in ("SECRET", "KEY", "PASSWORD")):
        return f"a value of {len(value)} characters"
    return repr(value if len(value) <= 80 else value[:77] + "...")


def _guid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError("must be a GUID like 00000000-0000-0000-0000-000000000000") from None


_DOMAIN = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$", re.I)


def _tenant(value: str) -> str:
    if _DOMAIN.match(value):
        return value.lower()
    try:
        return _guid(value)
    except ValueError:
        raise ValueError(
            "must be the directory (tenant) GUID or a verified domain like contoso.onmicrosoft.com"
        ) from None


_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


def _url(*, https_only: bool) -> Callable[[str], str]:
    """An absolute URL without trailing slash, query or fragment; http only on loopback."""

    def parse(value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or fragment")
        if parts.scheme == "http" and (https_only or parts.hostname not in _LOOPBACK_HOSTS):
            raise ValueError("must use https (plain http is accepted only for localhost)")
        return value.rstrip("/")

    return parse


def _webhook_secret(value: str) -> str:
    if not value.startswith("whsec_"):
        raise ValueError('must be a Standard Webhooks secret starting with "whsec_"')
    try:
        key = base64.b64decode(value[len("whsec_") :], validate=True)
    except binascii.Error:
        raise ValueError('must be "whsec_" followed by base64') from None
    if not 24 <= len(key) <= 64:
        raise ValueError("must decode to 24 to 64 bytes of key")
    return value


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError("must be a whole number") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return parse


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false", "1", "0"):
        raise ValueError("must be true or false")
    return lowered in ("true", "1")


def _category(value: str) -> str:
    if len(value) > 255 or any(ord(c) < 32 for c in value):
        raise ValueError("must be at most 255 printable characters")
    return value


_VAULT_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")


def _vault_name(value: str) -> str:
    if not _VAULT_NAME.match(value):
        raise ValueError("must be a Key Vault object name: 1-127 letters, digits and hyphens")
    return value


def _schedule(value: str) -> str:
    ncrontab.parse(value)  # raises ValueError with the reason
    return value


# The storage endpoint suffix of Azure's public cloud; sovereign clouds have their own
# (core.chinacloudapi.cn, core.usgovcloudapi.net), which a connection string names with
# EndpointSuffix and an identity-based connection through its service URIs.
PUBLIC_STORAGE_SUFFIX = "core.windows.net"


def _endpoint(account: str, service: str, suffix: str, protocol: str = "https") -> str:
    return f"{protocol}://{account}.{service}.{suffix}"


def _storage(r: _Reader) -> StorageSettings:
    name = "AzureWebJobsStorage"
    value = r.raw(name)
    if value:
        if value.replace(" ", "").lower() == "usedevelopmentstorage=true":
            value = DEVSTORE_CONNECTION_STRING
        pairs = dict(
            part.split("=", 1) for part in value.strip(";").split(";") if "=" in part and part
        )
        parts = [p for p in value.strip(";").split(";") if p]
        if len(pairs) != len(parts):
            raise ConfigError(name, "is not a connection string of key=value pairs")
        keys = {k.strip().lower(): v.strip() for k, v in pairs.items()}
        if not ({"accountname", "tableendpoint"} & keys.keys()):
            raise ConfigError(name, "names no AccountName or TableEndpoint")
        if not ({"accountkey", "sharedaccesssignature"} & keys.keys()):
            raise ConfigError(name, "has no AccountKey or SharedAccessSignature")
        # Never quote the value: it carries the key.
        suffix = keys.get("endpointsuffix") or PUBLIC_STORAGE_SUFFIX
        if not _DOMAIN.match(suffix):
            raise ConfigError(name, "has an EndpointSuffix that is not a DNS suffix")
        protocol = keys.get("defaultendpointsprotocol", "https").lower()
        if protocol not in ("http", "https"):
            raise ConfigError(name, "has a DefaultEndpointsProtocol other than http or https")
        account = keys.get("accountname", "")
        endpoints: dict[str, str | None] = {}
        for service in ("table", "queue"):
            given = keys.get(f"{service}endpoint")
            built = _endpoint(account, service, suffix, protocol) if account else None
            endpoints[service] = given.rstrip("/") if given else built
        return StorageSettings(
            connection_string=value,
            table_endpoint=endpoints["table"],
            queue_endpoint=endpoints["queue"],
        )
    # Identity-based connection, as the Functions host reads it (AzureWebJobsStorage__*): the
    # service URIs when given (required outside the public cloud), else the account's endpoints
    # in the public cloud.
    account = r.raw(f"{name}__accountName")
    table = r.raw(f"{name}__tableServiceUri")
    queue = r.raw(f"{name}__queueServiceUri")
    if account:
        if not re.fullmatch(r"[a-z0-9]{3,24}", account):
            raise ConfigError(f"{name}__accountName", "must be 3-24 lowercase letters and digits")
        table = table or _endpoint(account, "table", PUBLIC_STORAGE_SUFFIX)
        queue = queue or _endpoint(account, "queue", PUBLIC_STORAGE_SUFFIX)
    if not (table and queue):
        raise ConfigError(
            name,
            "is missing (a connection string, UseDevelopmentStorage=true locally, or "
            f"{name}__accountName or {name}__tableServiceUri and {name}__queueServiceUri "
            "for an identity-based connection)",
        )
    https = _url(https_only=True)
    return StorageSettings(
        table_endpoint=r.check(f"{name}__tableServiceUri", table, https),
        queue_endpoint=r.check(f"{name}__queueServiceUri", queue, https),
        client_id=r.raw(f"{name}__clientId") or None,
    )


def load_settings(
    environ: Mapping[str, str] | None = None, local_settings: Path | None = None
) -> Settings:
    """Validate every setting of the product; raise :class:`ConfigError` on the first bad one."""
    r = _Reader(merged_environment(environ, local_settings))
    storage = _storage(r)
    tenant_id = r.check("TENANT_ID", r.required("TENANT_ID", "the Entra directory id"), _tenant)
    client_id = r.check(
        "CLIENT_ID", r.required("CLIENT_ID", "the app registration's client id"), _guid
    )
    mode = r.optional("CREDENTIAL_MODE", "secret")
    if mode not in CREDENTIAL_MODES:
        raise ConfigError("CREDENTIAL_MODE", f"must be one of {', '.join(CREDENTIAL_MODES)}")
    key_vault_url = r.raw("KEY_VAULT_URL") or None
    if key_vault_url:
        key_vault_url = r.check("KEY_VAULT_URL", key_vault_url, _url(https_only=False))
    client_secret = r.raw("CLIENT_SECRET") or None
    if client_secret and client_secret.startswith("@Microsoft.KeyVault("):
        raise ConfigError(
            "CLIENT_SECRET",
            "is an unresolved Key Vault reference (grant the app's identity "
            "'Key Vault Secrets User' on the vault and check the reference)",
        )
    if mode == "secret" and not client_secret and not key_vault_url:
        raise ConfigError(
            "CLIENT_SECRET", "is missing (required in secret mode without KEY_VAULT_URL)"
        )
    if mode == "certificate" and not key_vault_url:
        raise ConfigError("KEY_VAULT_URL", "is missing (the certificate is read from Key Vault)")
    mi_client_id = r.raw("MANAGED_IDENTITY_CLIENT_ID") or None
    if mode == "managed_identity":
        mi_client_id = r.check(
            "MANAGED_IDENTITY_CLIENT_ID",
            r.required("MANAGED_IDENTITY_CLIENT_ID", "the user-assigned identity's client id"),
            _guid,
        )
    elif mi_client_id:  # also the identity that reads Key Vault
        mi_client_id = r.check("MANAGED_IDENTITY_CLIENT_ID", mi_client_id, _guid)
    mailbox_scope = r.optional("MAILBOX_SCOPE", "tenant").lower()
    if mailbox_scope not in MAILBOX_SCOPES:
        raise ConfigError("MAILBOX_SCOPE", f"must be one of {', '.join(MAILBOX_SCOPES)}")
    rotation_enabled = r.check("ROTATION_ENABLED", r.optional("ROTATION_ENABLED", "false"), _bool)
    if rotation_enabled and mode != "secret":
        raise ConfigError(
            "ROTATION_ENABLED", f"rotates client secrets only (CREDENTIAL_MODE is {mode})"
        )
    if rotation_enabled and (client_secret or not key_vault_url):
        raise ConfigError(
            "ROTATION_ENABLED",
            "needs the secret in Key Vault: set KEY_VAULT_URL and leave CLIENT_SECRET empty "
            "(a rotated secret cannot reach CLIENT_SECRET)",
        )

    return Settings(
        storage=storage,
        tenant_id=tenant_id,
        client_id=client_id,
        credential_mode=mode,  # checked against CREDENTIAL_MODES
        client_secret=client_secret,
        key_vault_url=key_vault_url,
        managed_identity_client_id=mi_client_id,
        graph_endpoint=r.check(
            "GRAPH_ENDPOINT",
            r.optional("GRAPH_ENDPOINT", "https://graph.microsoft.com"),
            _url(https_only=True),
        ),
        authority_host=r.check(
            "AUTHORITY_HOST",
            r.optional("AUTHORITY_HOST", "https://login.microsoftonline.com"),
            _url(https_only=True),  # MSAL accepts only https authorities
        ),
        public_base_url=r.check(
            "PUBLIC_BASE_URL",
            r.required("PUBLIC_BASE_URL", "the public https origin of this function app"),
            _url(https_only=False),
        ),
        booking_webhook_secret=r.check(
            "BOOKING_WEBHOOK_SECRET", r.required("BOOKING_WEBHOOK_SECRET"), _webhook_secret
        ),
        platform_webhook_url=r.check(
            "PLATFORM_WEBHOOK_URL", r.required("PLATFORM_WEBHOOK_URL"), _url(https_only=False)
        ),
        platform_webhook_secret=r.check(
            "PLATFORM_WEBHOOK_SECRET", r.required("PLATFORM_WEBHOOK_SECRET"), _webhook_secret
        ),
        sync_window_days=r.check(
            "SYNC_WINDOW_DAYS", r.optional("SYNC_WINDOW_DAYS", "180"), _int_between(1, 1825)
        ),
        event_category=r.check("EVENT_CATEGORY", r.raw("EVENT_CATEGORY"), _category),
        subscription_lifetime_minutes=r.check(
            "SUBSCRIPTION_LIFETIME_MINUTES",
            r.optional("SUBSCRIPTION_LIFETIME_MINUTES", "4230"),
            _int_between(45, 10080),
        ),
        invite_guests=r.check("INVITE_GUESTS", r.optional("INVITE_GUESTS", "false"), _bool),
        retry_attempts=r.check(
            "RETRY_ATTEMPTS", r.optional("RETRY_ATTEMPTS", "8"), _int_between(1, 50)
        ),
        retry_base_seconds=r.check(
            "RETRY_BASE_SECONDS", r.optional("RETRY_BASE_SECONDS", "5"), _int_between(0, 3600)
        ),
        **{
            name.lower(): r.check(name, r.optional(name, default), _schedule)
            for name, default in SCHEDULE_DEFAULTS.items()
        },
        key_vault_secret_name=r.check(
            "KEY_VAULT_SECRET_NAME",
            r.optional("KEY_VAULT_SECRET_NAME", "graph-client-secret"),
            _vault_name,
        ),
        key_vault_certificate_name=r.check(
            "KEY_VAULT_CERTIFICATE_NAME",
            r.optional("KEY_VAULT_CERTIFICATE_NAME", "graph-client-certificate"),
            _vault_name,
        ),
        rotation_enabled=rotation_enabled,
        # More than 30 days, or the next daily check would rotate the new secret again.
        secret_lifetime_days=r.check(
            "SECRET_LIFETIME_DAYS", r.optional("SECRET_LIFETIME_DAYS", "180"), _int_between(31, 730)
        ),
        mailbox_scope=mailbox_scope,  # checked against MAILBOX_SCOPES
    )


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read and validated once."""
    return load_settings()
