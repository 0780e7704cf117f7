"""Every Graph and Entra failure as one typed error, with the admin's message and fix hint.

``ERROR_TABLE`` is the one place where a code becomes a kind. The kind says whether retrying can
help; the message names the mailbox or setting involved; the hint says what to do. Status, history,
the doctor and the CLI show ``code``, ``message`` and ``hint`` as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class ErrorKind(Enum):
    # (retryable, message template, hint). Templates may use {mailbox} and {code}.
    MAILBOX_UNKNOWN = (
        False,
        "mailbox {mailbox} does not exist in the tenant",
        "Check the address in the mapping. For a room, use the room's resource mailbox address "
        "(Microsoft 365 admin center → Resources → Rooms & equipment).",
    )
    MAILBOX_NOT_ENABLED = (
        False,
        "mailbox {mailbox} is not an Exchange Online mailbox (unlicensed, on-premises or deleted)",
        "Give the user an Exchange Online licence, or migrate the mailbox to Exchange Online; "
        "for a deleted mailbox, restore it or remove the mapping.",
    )
    ACCESS_DENIED = (
        False,
        "access to mailbox {mailbox} was denied",
        "Add the mailbox to the mail-enabled security group the app is scoped to (docs/deploy.md, "
        "mailbox scoping; the doctor names it); Exchange can take an hour to apply scope "
        "changes. Only where MAILBOX_SCOPE=tenant: grant admin consent for Calendars.ReadWrite.",
    )
    PERMISSION_MISSING = (
        False,
        "the app lacks a Graph permission for this operation ({code})",
        "Grant the application permission listed in docs/permissions.md under "
        "App registrations → API permissions, then grant admin consent.",
    )
    ITEM_NOT_FOUND = (
        False,
        "the event no longer exists in mailbox {mailbox}",
        "Nothing to do: the service recreates events it owns on the next sync.",
    )
    SUBSCRIPTION_NOT_FOUND = (
        False,
        "the Graph subscription no longer exists",
        "Nothing to do: subscriptions are recreated on the next renewal.",
    )
    SECRET_INVALID = (
        False,
        "CLIENT_SECRET is not accepted by Entra ID ({code})",
        "Use the secret's Value, not its Secret ID. If the value was not saved, create a new "
        "secret under App registrations → Certificates & secrets and update CLIENT_SECRET "
        "(or the Key Vault secret).",
    )
    SECRET_EXPIRED = (
        False,
        "the client secret (CLIENT_SECRET or its Key Vault secret) has expired ({code})",
        "Create a new secret under App registrations → Certificates & secrets and put its value "
        "in CLIENT_SECRET or Key Vault, or switch CREDENTIAL_MODE to managed_identity so no "
        "secret can expire.",
    )
    CERTIFICATE_INVALID = (
        False,
        "the certificate credential is not accepted by Entra ID ({code})",
        "Upload the certificate's public key to the app registration (Certificates & secrets) "
        "and check that Key Vault holds the matching private key.",
    )
    TENANT_UNKNOWN = (
        False,
        "TENANT_ID is not a known directory ({code})",
        "Copy the Directory (tenant) ID from Entra ID → Overview into TENANT_ID.",
    )
    APP_UNKNOWN = (
        False,
        "CLIENT_ID is not an app registration in this tenant ({code})",
        "Copy the Application (client) ID from the app registration's overview into CLIENT_ID, "
        "and check that TENANT_ID is the tenant the app was registered in.",
    )
    LOGIN_FAILED = (
        False,
        "Entra ID refused the token request ({code})",
        "Check TENANT_ID, CLIENT_ID and the credential; the code is explained at "
        "https://login.microsoftonline.com/error?code=<number>.",
    )
    TOKEN_INVALID = (
        True,
        "Graph did not accept the access token ({code})",
        "Usually passes on its own when a new token is fetched; if it persists, check that "
        "GRAPH_ENDPOINT and AUTHORITY_HOST belong to the same cloud.",
    )
    THROTTLED = (
        True,
        "Graph is throttling requests for {mailbox} ({code})",
        "Nothing to do: the work is retried after the time Graph asks for.",
    )
    UNAVAILABLE = (
        True,
        "Graph is temporarily unavailable ({code})",
        "Nothing to do: the work is retried with backoff.",
    )
    NETWORK = (
        True,
        "could not reach Graph or Entra ID ({code})",
        "Nothing to do if it passes; otherwise check outbound network access to GRAPH_ENDPOINT "
        "and AUTHORITY_HOST.",
    )
    SYNC_STATE_LOST = (
        True,
        "the calendar change feed of {mailbox} must be read again from the start ({code})",
        "Nothing to do: a full read is compared with what was already synced.",
    )
    INVALID_REQUEST = (
        False,
        "Graph rejected the request ({code})",
        "This points at a product defect or unusual data; see the message and report it.",
    )
    UNEXPECTED = (
        False,
        "unexpected answer from Graph ({code})",
        "Check the function log for the request id and Graph's message.",
    )

    @property
    def retryable(self) -> bool:
        return bool(self.value[0])

    @property
    def template(self) -> str:
        return str(self.value[1])

    @property
    def hint(self) -> str:
        return str(self.value[2])


# Graph error codes (error.code) and Entra AADSTS codes → kind. Codes compare case-insensitively.
ERROR_TABLE: dict[str, ErrorKind] = {
    "errorinvaliduser": ErrorKind.MAILBOX_UNKNOWN,
    "resourcenotfound": ErrorKind.MAILBOX_UNKNOWN,
    "request_resourcenotfound": ErrorKind.MAILBOX_UNKNOWN,
    "errornonexistentmailbox": ErrorKind.MAILBOX_UNKNOWN,
    "mailboxnotenabledforrestapi": ErrorKind.MAILBOX_NOT_ENABLED,
    "mailboxnotsupportedforrestapi": ErrorKind.MAILBOX_NOT_ENABLED,
    "erroraccessdenied": ErrorKind.ACCESS_DENIED,
    "accessdenied": ErrorKind.ACCESS_DENIED,
    "authorization_requestdenied": ErrorKind.PERMISSION_MISSING,
    "erroritemnotfound": ErrorKind.ITEM_NOT_FOUND,
    "invalidauthenticationtoken": ErrorKind.TOKEN_INVALID,
    "aadsts7000215": ErrorKind.SECRET_INVALID,
    "aadsts7000222": ErrorKind.SECRET_EXPIRED,
    "aadsts700027": ErrorKind.CERTIFICATE_INVALID,
    "aadsts700024": ErrorKind.CERTIFICATE_INVALID,
    "aadsts90002": ErrorKind.TENANT_UNKNOWN,
    "aadsts900023": ErrorKind.TENANT_UNKNOWN,
    "aadsts700016": ErrorKind.APP_UNKNOWN,
    "applicationthrottled": ErrorKind.THROTTLED,
    "toomanyrequests": ErrorKind.THROTTLED,
    "errortoomanyobjectsopened": ErrorKind.THROTTLED,
    "serviceunavailable": ErrorKind.UNAVAILABLE,
    "errorserverbusy": ErrorKind.UNAVAILABLE,
    "gatewaytimeout": ErrorKind.UNAVAILABLE,
    "syncstatenotfound": ErrorKind.SYNC_STATE_LOST,
    "resyncrequired": ErrorKind.SYNC_STATE_LOST,
    "syncstateinvalid": ErrorKind.SYNC_STATE_LOST,
}

# When the body names no known code, the status decides.
STATUS_KINDS: dict[int, ErrorKind] = {
    400: ErrorKind.INVALID_REQUEST,
    401: ErrorKind.TOKEN_INVALID,
    403: ErrorKind.ACCESS_DENIED,
    404: ErrorKind.ITEM_NOT_FOUND,
    410: ErrorKind.SYNC_STATE_LOST,
    429: ErrorKind.THROTTLED,
    500: ErrorKind.UNAVAILABLE,
    502: ErrorKind.UNAVAILABLE,
    503: ErrorKind.UNAVAILABLE,
    504: ErrorKind.UNAVAILABLE,
}


@dataclass(eq=False)
class GraphError(Exception):
    """A failed Graph or Entra request, classified for people and for retry decisions."""

    kind: ErrorKind
    code: str
    detail: str = ""  # Graph's or Entra's own message, for the log
    status: int | None = None
    mailbox: str | None = None
    retry_after: float | None = None
    request_id: str | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def retryable(self) -> bool:
        return self.kind.retryable

    @property
    def message(self) -> str:
        return self.kind.template.format(mailbox=self.mailbox or "(unknown)", code=self.code)

    @property
    def hint(self) -> str:
        return self.kind.hint

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        """What status, history and ``booking.failed`` show: code, message and hint."""
        return {"code": self.code, "message": self.message, "hint": self.hint}


class DeltaReset(GraphError):
    """The delta token is gone (410 / syncStateNotFound): restart the round with a full read."""


def classify(code: str | None, status: int | None) -> ErrorKind:
    if code:
        kind = ERROR_TABLE.get(code.lower())
        if kind is not None:
            return kind
    if status is not None and status in STATUS_KINDS:
        return STATUS_KINDS[status]
    return ErrorKind.UNEXPECTED


def error_from_response(
    status: int,
    body: Any,
    *,
    mailbox: str | None = None,
    retry_after: float | None = None,
    request_id: str | None = None,
) -> GraphError:
    """A Graph error body (``{"error": {"code", "message"}}``) as a :class:`GraphError`."""
    code, detail = "", ""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code") or "")
        detail = str(body["error"].get("message") or "")
    kind = classify(code, status)
    cls = DeltaReset if kind is ErrorKind.SYNC_STATE_LOST else GraphError
    return cls(
        kind=kind,
        code=code or f"HTTP{status}",
        detail=detail,
        status=status,
        mailbox=mailbox,
        retry_after=retry_after,
        request_id=request_id,
    )


def error_from_login(result: dict[str, Any]) -> GraphError:
    """An MSAL error result (Entra's token endpoint answer) as a :class:`GraphError`."""
    codes = result.get("error_codes") or []
    code = f"AADSTS{codes[0]}" if codes else str(result.get("error") or "login_failed")
    kind = classify(code, None)
    if kind is ErrorKind.UNEXPECTED:
        kind = ErrorKind.LOGIN_FAILED
    description = str(result.get("error_description") or "")
    # Entra appends trace ids and timestamps; the first line is the useful part.
    return GraphError(
        kind=kind, code=code, detail=description.splitlines()[0] if description else ""
    )
