"""What an admin reads: status, history and the doctor, assembled for the API, the page and the CLI.

- :func:`build_status`: the credential and its expiry, and per mapping its state (ok, error,
  deactivated), last success, last error (code, message, hint), subscription expiry, and the
  work that waits for it or was parked.
- :func:`history_page`: what the service did, newest first, per resource or for all.
- :func:`run_doctor`: every check of the set-up, each pass / warn / fail with a hint.
- :func:`credential_status`: the one place that says when the credential expires (the
  credentials module may provide its own; this module's reading of the app registration is the
  fallback).
"""

from __future__ import annotations

import copy
import importlib
import json
import logging
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import requests

from sync_core.graph import ErrorKind, GraphClient, GraphError
from sync_core.graph.client import parse_graph_timestamp
from sync_core.problems import ValidationFailed
from sync_core.store.history import HistoryEntry
from sync_core.store.mappings import Mapping
from sync_core.store.queues import (
    APPLY_BOOKING,
    DELIVER,
    SYNC_MAILBOX,
    decode_message,
    poison_queue,
)
from sync_core.validation import check_identifier

if TYPE_CHECKING:
    from sync_core.config import Settings
    from sync_core.services import Services

log = logging.getLogger(__name__)

WORK_QUEUES = (APPLY_BOOKING, SYNC_MAILBOX, DELIVER)
PEEK = 32  # Storage queues show at most 32 messages without taking them
EXPIRY_WARNING_DAYS = 30
MAX_HISTORY_PAGE = 1000
ECHO_TIMEOUT = 10.0
KEY_VAULT_HINT = (
    "Grant the app's identity 'Key Vault Secrets User' (or 'Key Vault Secrets Officer' for "
    "rotation) on the vault, and check its network rules."
)  # what Graph allows the notification URL for its validation request

# SPEC §5: what the app needs, and what it can do without.
REQUIRED_ROLES = {
    "Calendars.ReadWrite": "read and write the mapped calendars",
    "Place.Read.All": "discover rooms and room lists",
    "User.Read.All": "resolve users and check mailboxes",
}
OPTIONAL_ROLES = {
    "Application.ReadWrite.OwnedBy": "read the credential's expiry and rotate the secret",
}
ROLE_ALTERNATIVES = {
    "Application.ReadWrite.OwnedBy": {"Application.ReadWrite.All"},
    "User.Read.All": {"User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"},
}
GRANT_WHERE = (
    "Entra admin center → App registrations → {app} → API permissions → Add a permission → "
    "Microsoft Graph → Application permissions: add {roles}, then 'Grant admin consent'."
)


def _now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


CREDENTIAL_OK = frozenset({"ok"})
CREDENTIAL_WARNING = frozenset({"warning", "unknown"})  # anything else is an error


def credential_tone(state: object) -> Literal["ok", "warning", "error"]:
    if state in CREDENTIAL_OK:
        return "ok"
    return "warning" if state in CREDENTIAL_WARNING else "error"


def _credentials_module() -> Any:
    try:
        return importlib.import_module("sync_core.credentials")
    except ImportError:
        return None


def credential_status(svc: Services, graph: GraphClient | None = None) -> dict[str, Any]:
    """The credential in use and when it expires::

        {"kind": "client_secret" | "certificate" | ..., "mode", "state", "expires_at",
         "days_left", "message", "hint", "error": {code, message, hint} | None}

    ``state`` is ``ok``, ``warning`` (expires within 30 days), ``unknown`` (the expiry could not
    be read) or ``error`` (expired, refused). ``sync_core.credentials.credential_status(svc)``
    answers when that module provides it; otherwise the app registration's credentials are read
    through Graph."""
    custom = getattr(_credentials_module(), "credential_status", None)
    if callable(custom):
        try:
            return dict(custom(svc))
        except Exception:
            log.exception("credentials.credential_status failed; reading the registration")
    return registration_expiry(svc.settings, graph or svc.graph)


def registration_expiry(settings: Settings, graph: GraphClient) -> dict[str, Any]:
    """Read the expiry from the app registration (``passwordCredentials`` / ``keyCredentials``);
    the secret in use is the one whose ``hint`` is the first three characters of CLIENT_SECRET.
    """
    mode = settings.credential_mode
    kind = {"secret": "client_secret", "certificate": "certificate"}.get(mode, mode)
    status: dict[str, Any] = {
        "kind": kind,
        "mode": mode,
        "state": "unknown",
        "expires_at": None,
        "days_left": None,
        "name": None,
        "message": "",
        "hint": "",
        "error": None,
    }
    if mode == "managed_identity":
        return status | {
            "state": "ok",
            "message": "a managed identity signs in: there is no secret or certificate to expire",
        }
    if mode == "secret" and not settings.client_secret:
        return status | {
            "message": "the client secret is read from Key Vault; its expiry is not known here",
            "hint": "Check the secret's expiry under App registrations → Certificates & secrets.",
        }
    try:
        app = graph.get_application()
    except GraphError as error:
        if error.kind in (ErrorKind.PERMISSION_MISSING, ErrorKind.ACCESS_DENIED):
            return status | {
                "message": "the expiry cannot be read: the app may not read its own registration",
                "hint": (
                    "Grant Application.ReadWrite.OwnedBy and make the app's service principal an "
                    "owner of its registration, or check the expiry yourself under App "
                    "registrations → Certificates & secrets."
                ),
                "error": error.to_json(),
            }
        return status | {
            "state": "error",
            "message": error.message,
            "hint": error.hint,
            "error": error.to_json(),
        }
    if mode == "secret":
        secret = settings.client_secret or ""
        candidates = [
            p for p in app.get("passwordCredentials") or [] if p.get("hint") == secret[:3]
        ]
        if not candidates:
            return status | {
                "message": "CLIENT_SECRET is none of the app registration's secrets",
                "hint": (
                    "The secret may belong to another app registration or have been removed: "
                    "create a new secret under App registrations → Certificates & secrets and "
                    "put its Value in CLIENT_SECRET."
                ),
            }
    else:
        candidates = list(app.get("keyCredentials") or [])
        if not candidates:
            return status | {
                "message": "the app registration has no certificate",
                "hint": "Upload the certificate under App registrations → Certificates & secrets.",
            }
    chosen = max(candidates, key=lambda c: parse_graph_timestamp(c.get("endDateTime")) or _now())
    end = parse_graph_timestamp(chosen.get("endDateTime"))
    if end is None:
        return status | {"message": "the registration names no end date", "name": None}
    seconds = (end - _now()).total_seconds()
    days = int(seconds // 86400)
    what = "client secret" if mode == "secret" else "certificate"
    status |= {
        "expires_at": iso(end),
        "days_left": max(days, 0),
        "name": chosen.get("displayName"),
    }
    if seconds <= 0:
        kind_ = ErrorKind.SECRET_EXPIRED if mode == "secret" else ErrorKind.CERTIFICATE_INVALID
        code = "AADSTS7000222" if mode == "secret" else "AADSTS700027"
        expired = GraphError(kind=kind_, code=code).to_json()
        return status | {
            "state": "error",
            "days_left": 0,
            "message": expired["message"],
            "hint": expired["hint"],
            "error": expired,
        }
    if days < EXPIRY_WARNING_DAYS:
        return status | {
            "state": "warning",
            "message": f"the {what} expires in {days} day(s), on {end:%Y-%m-%d}",
            "hint": (
                f"Create a new {what} under App registrations → Certificates & secrets and put "
                "it in CLIENT_SECRET or Key Vault before then (with KEY_VAULT_URL and "
                "Application.ReadWrite.OwnedBy the service rotates a secret itself), or use "
                "CREDENTIAL_MODE=managed_identity so nothing can expire."
            ),
        }
    return status | {"state": "ok", "message": f"the {what} is valid until {end:%Y-%m-%d}"}


# -- queued and parked work ------------------------------------------------------------------------


@dataclass
class WorkCounts:
    pending: int = 0
    parked: int = 0


def _peek(svc: Services, queue: str) -> list[dict[str, Any]]:
    try:
        messages = svc.queues.queue(queue).peek_messages(max_messages=PEEK)
    except Exception:
        log.warning("could not peek into queue %s", queue, exc_info=True)
        return []
    found = []
    for message in messages:
        try:
            body = json.loads(decode_message(message.content))
        except (ValueError, TypeError):
            continue
        if isinstance(body, dict):
            found.append(body)
    return found


def _resource_of(
    svc: Services, queue: str, body: dict[str, Any], by_mailbox: dict[str, str]
) -> str | None:
    if queue == SYNC_MAILBOX:
        return by_mailbox.get(str(body.get("mailbox", "")).lower())
    if queue == DELIVER:
        data = (body.get("body") or {}).get("data") or {}
        value = data.get("resource_id")
        return str(value) if value is not None else None
    booking_id = body.get("booking_id")
    if booking_id is None:
        return None
    link = svc.links.get(str(booking_id))
    if link is not None:
        return link.resource_id
    stored = svc.bookings.get(str(booking_id))
    if stored is not None:
        value = (stored.event.get("data") or {}).get("resource_id")
        return str(value) if value is not None else None
    return None


def work_report(
    svc: Services, mappings: list[Mapping]
) -> tuple[list[dict[str, Any]], dict[str, WorkCounts]]:
    """Per queue: messages waiting and parked (the queue's approximate count). Per resource:
    what could be attributed by looking at the first messages of each queue (messages that wait
    for a later retry are not visible, so they count only in the queue totals)."""
    by_mailbox = {m.mailbox: m.resource_id for m in mappings}
    per_resource: dict[str, WorkCounts] = {}
    queues = []
    for queue in WORK_QUEUES:
        pending = svc.queues.depth(queue)
        parked = svc.queues.depth(poison_queue(queue))
        queues.append({"queue": queue, "pending": pending, "parked": parked})
        for name, count, attr in (
            (queue, pending, "pending"),
            (poison_queue(queue), parked, "parked"),
        ):
            if not count:
                continue
            for body in _peek(svc, name):
                resource = _resource_of(svc, queue, body, by_mailbox)
                if resource is not None:
                    counts = per_resource.setdefault(resource, WorkCounts())
                    setattr(counts, attr, getattr(counts, attr) + 1)
    return queues, per_resource


# -- status ----------------------------------------------------------------------------------------

MappingState = Literal["ok", "error", "deactivated"]


def mapping_status(
    svc: Services, mapping: Mapping, subscription_expiry: datetime | None, work: WorkCounts
) -> dict[str, Any]:
    health = svc.health.get(mapping.resource_id)
    state: MappingState = "deactivated" if not mapping.enabled else health.state
    last_error = None
    if health.last_error:
        last_error = {**health.last_error, "at": iso(health.last_error_at)}
    return {
        "resource_id": mapping.resource_id,
        "mailbox": mapping.mailbox,
        "privacy": mapping.privacy,
        "enabled": mapping.enabled,
        "state": state,
        "last_success": iso(health.last_success),
        "last_error": last_error,
        "subscription_expires_at": iso(subscription_expiry),
        "pending": work.pending,
        "parked": work.parked,
    }


def build_status(svc: Services) -> dict[str, Any]:
    """``GET /api/admin/status``: everything an admin checks at a glance."""
    mappings = sorted(svc.mappings.all(), key=lambda m: m.resource_id)
    subscriptions = {r.mailbox: r.expires_at for r in svc.subscriptions.all()}
    queues, per_resource = work_report(svc, mappings)
    with ThreadPoolExecutor(max_workers=8) as pool:
        rows = list(
            pool.map(
                lambda m: mapping_status(
                    svc,
                    m,
                    subscriptions.get(m.mailbox) if m.enabled else None,
                    per_resource.get(m.resource_id, WorkCounts()),
                ),
                mappings,
            )
        )
        credential = credential_status(svc)
    summary = {
        "mappings": len(rows),
        "ok": sum(1 for r in rows if r["state"] == "ok"),
        "error": sum(1 for r in rows if r["state"] == "error"),
        "deactivated": sum(1 for r in rows if r["state"] == "deactivated"),
    }
    pending = sum(q["pending"] for q in queues)
    parked = sum(q["parked"] for q in queues)
    tone = credential_tone(credential.get("state"))
    if summary["error"] or tone == "error":
        overall = "error"
    elif parked or tone == "warning":
        overall = "warning"
    else:
        overall = "ok"
    return {
        "generated_at": iso(_now()),
        "state": overall,
        "credential": credential,
        "work": {"pending": pending, "parked": parked, "queues": queues},
        "summary": summary,
        "mappings": rows,
    }


# -- history ---------------------------------------------------------------------------------------


def history_page(
    svc: Services,
    *,
    resource_id: str | None = None,
    limit: int = 50,
    continuation: str | None = None,
) -> tuple[list[HistoryEntry], str | None]:
    """``GET /api/admin/history``: newest first; one resource's, or everything."""
    if not 1 <= limit <= MAX_HISTORY_PAGE:
        raise ValidationFailed.single("limit", f"must be between 1 and {MAX_HISTORY_PAGE}")
    if resource_id is not None:
        check_identifier("resource_id", resource_id)
    try:
        return svc.history.page(resource_id=resource_id, page_size=limit, continuation=continuation)
    except ValueError as exc:  # a continuation token that is not ours
        raise ValidationFailed.single("continuation", str(exc)) from None


# -- doctor ----------------------------------------------------------------------------------------

CheckStatus = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    name: str
    status: CheckStatus
    message: str
    hint: str = ""
    code: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "message": self.message,
            "hint": self.hint,
            "code": self.code,
        }


def _failed(name: str, error: GraphError) -> Check:
    return Check(name, "fail", error.message, error.hint, error.code)


def check_token(graph: GraphClient) -> tuple[Check, dict[str, Any] | None]:
    """A fresh token (not a cached one): proves the credential works right now."""
    try:
        claims = graph.tokens.claims()
    except GraphError as error:
        return _failed("token", error), None
    return (
        Check("token", "pass", f"a token was issued by {graph.settings.authority_host}"),
        claims,
    )


def check_permissions(claims: dict[str, Any] | None, settings: Settings) -> Check:
    if claims is None:
        return Check("permissions", "warn", "not checked: no token", "Fix the token check first.")
    roles = {str(r) for r in claims.get("roles") or []}

    def has(role: str) -> bool:
        return role in roles or bool(ROLE_ALTERNATIVES.get(role, set()) & roles)

    missing = [r for r in REQUIRED_ROLES if not has(r)]
    optional = [r for r in OPTIONAL_ROLES if not has(r)]
    app = f"the app {settings.client_id}"
    if missing:
        needed = "; ".join(f"{r} ({REQUIRED_ROLES[r]})" for r in missing)
        return Check(
            "permissions",
            "fail",
            f"missing application permissions: {needed}",
            GRANT_WHERE.format(app=app, roles=", ".join(missing)),
            "PermissionMissing",
        )
    if optional:
        needed = "; ".join(f"{r} ({OPTIONAL_ROLES[r]})" for r in optional)
        return Check(
            "permissions",
            "warn",
            f"granted: {', '.join(sorted(roles))}; optional and missing: {needed}",
            GRANT_WHERE.format(app=app, roles=", ".join(optional))
            + " Without it, check the secret's expiry yourself and rotate it by hand.",
        )
    return Check("permissions", "pass", f"granted: {', '.join(sorted(roles))}")


def check_mailbox(graph: GraphClient, mapping: Mapping) -> Check:
    name = f"mailbox {mapping.mailbox}"
    try:
        calendar = graph.check_mailbox(mapping.mailbox)
    except GraphError as error:
        error.mailbox = error.mailbox or mapping.mailbox
        check = _failed(name, error)
        return Check(
            name,
            "fail",
            f"{mapping.resource_id}: {check.message}",
            check.hint,
            check.code,
        )
    providers = calendar.get("allowedOnlineMeetingProviders")
    if isinstance(providers, list) and "teamsForBusiness" not in providers:
        return Check(
            name,
            "warn",
            f"{mapping.resource_id}: reachable, calendar readable; it does not offer Teams, so "
            "bookings that ask for a Teams meeting get their event without one",
            "Room mailboxes often lack Teams (allowedOnlineMeetingProviders). Give the mailbox a "
            "Teams licence, or book Teams meetings in an organiser's calendar instead.",
        )
    return Check(name, "pass", f"{mapping.resource_id}: reachable, calendar readable")


def check_subscriptions(svc: Services, graph: GraphClient, active: list[Mapping]) -> Check:
    """Every enabled mapping's subscription is alive (FAIL otherwise); no mailbox is mapped to
    several resources (FAIL, from before one mailbox was kept to one resource); Graph holds no
    subscription for this app that no enabled mapping owns (WARN: an unmapped mailbox's, or a
    duplicate beside a mailbox's recorded one)."""
    from sync_core import subscriptions

    try:
        listed = list(graph.subscriptions())
    except GraphError as error:
        return _failed("subscriptions", error)
    alive = {str(s.get("id")): s for s in listed}
    records = {r.mailbox: r for r in svc.subscriptions.all()}
    now = _now()
    problems = []
    for mapping in active:
        record = records.get(mapping.mailbox)
        if record is None:
            problems.append(f"{mapping.resource_id}: no subscription")
        elif record.expires_at <= now:
            problems.append(f"{mapping.resource_id}: expired at {iso(record.expires_at)}")
        elif record.subscription_id not in alive:
            problems.append(f"{mapping.resource_id}: Graph no longer knows the subscription")
        elif alive[record.subscription_id].get("notificationUrl") != svc.settings.notification_url:
            problems.append(f"{mapping.resource_id}: it notifies another URL")
    shared: dict[str, list[str]] = {}
    for mapping in svc.mappings.all():
        shared.setdefault(mapping.mailbox, []).append(mapping.resource_id)
    several = {m: sorted(ids) for m, ids in sorted(shared.items()) if len(ids) > 1}
    unowned = subscriptions.unowned(svc, listed)
    summary = f"{len(active) - len(problems)} of {len(active)} alive"
    if several:
        return Check(
            "subscriptions",
            "fail",
            "; ".join(
                [summary, *problems]
                + [f"{m} is mapped to {len(ids)} resources ({', '.join(ids)})"
                   for m, ids in several.items()]
            ),
            "One mailbox serves one resource: delete or move every mapping of the mailbox but "
            "one (DELETE /api/admin/mappings/{resource_id} or `python -m sync_core unmap "
            "RESOURCE`).",
            "MailboxMappedTwice",
        )  # fmt: skip
    if problems:
        return Check(
            "subscriptions",
            "fail",
            f"{summary}; " + "; ".join(problems),
            "Resync the mapping (POST /api/admin/mappings/{resource_id}/resync or "
            "`python -m sync_core resync RESOURCE`) to recreate it now; the renew_subscriptions "
            "timer also recreates it within 6 hours. If creating fails, check the "
            "notification URL check below.",
            "SubscriptionMissing",
        )
    if unowned:
        return Check(
            "subscriptions",
            "warn",
            f"{summary}; {len(unowned)} subscription(s) no enabled mapping owns: "
            + "; ".join(u.describe() for u in unowned),
            "They send notifications nobody needs. The renew_subscriptions timer deletes them "
            "on its next pass (within 6 hours); to delete them now, run that function once.",
            "SubscriptionUnowned",
        )
    if not active:
        return Check("subscriptions", "pass", "no active mapping needs one")
    return Check("subscriptions", "pass", summary)


def check_echo(settings: Settings) -> Check:
    """Graph only creates a subscription whose URLs echo its validation token within 10 s."""
    token = f"doctor {secrets.token_urlsafe(8)}: a/b+c&d=e?"
    problems = []
    for url in (settings.notification_url, settings.lifecycle_url):
        try:
            answer = requests.post(url, params={"validationToken": token}, timeout=ECHO_TIMEOUT)
        except requests.RequestException as exc:
            problems.append(f"{url}: not reachable ({type(exc).__name__})")
            continue
        if answer.status_code != 200:
            problems.append(f"{url}: answered {answer.status_code}")
        elif not answer.headers.get("Content-Type", "").startswith("text/plain"):
            problems.append(f"{url}: answered {answer.headers.get('Content-Type')}, not text/plain")
        elif answer.text != token:
            problems.append(f"{url}: did not echo the token")
    if problems:
        return Check(
            "notification_url",
            "fail",
            "; ".join(problems),
            "PUBLIC_BASE_URL must be the public https origin of this function app, reachable "
            "from the internet (Graph calls /api/graph/notifications and /api/graph/lifecycle "
            "on it); check the setting, custom domains and network restrictions.",
            "ValidationEchoFailed",
        )
    return Check(
        "notification_url", "pass", f"{settings.notification_url} echoes the validation token"
    )


def check_storage(svc: Services) -> Check:
    try:
        svc.tables.ping()
        svc.queues.depth(SYNC_MAILBOX)
    except Exception as exc:
        return Check(
            "storage",
            "fail",
            f"Table or Queue Storage is not reachable ({type(exc).__name__})",
            "Check AzureWebJobsStorage: a connection string, or for an identity-based "
            "connection AzureWebJobsStorage__accountName with the app's identity holding "
            "'Storage Table Data Contributor' and 'Storage Queue Data Contributor'.",
            type(exc).__name__,
        )
    return Check("storage", "pass", "tables and queues answer")


def check_key_vault(svc: Services) -> Check:
    """Key Vault answers to the app's identity (the credentials module's check if it has one)."""
    settings = svc.settings
    custom = getattr(_credentials_module(), "key_vault_status", None)
    if settings.key_vault_url and callable(custom):
        try:
            found = dict(custom(svc))
        except Exception as exc:
            found = {"state": "error", "error": {"code": type(exc).__name__, "message": str(exc)}}
        if found.get("state") == "ok":
            return Check("key_vault", "pass", f"{settings.key_vault_url} answers")
        error = found.get("error") or {}
        return Check(
            "key_vault",
            "fail",
            str(error.get("message") or "Key Vault does not answer"),
            str(error.get("hint") or KEY_VAULT_HINT),
            str(error.get("code") or "KeyVaultUnreachable"),
        )
    if not settings.key_vault_url:
        return Check(
            "key_vault", "pass", "not configured (KEY_VAULT_URL is empty): secrets come from "
            "app settings and the secret is not rotated automatically",
        )  # fmt: skip
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
    from azure.keyvault.secrets import SecretClient

    from sync_core.identity import azure_credential

    try:
        client = SecretClient(
            settings.key_vault_url, credential=azure_credential(settings.managed_identity_client_id)
        )
        next(iter(client.list_properties_of_secrets().by_page()), None)
    except ClientAuthenticationError as exc:
        message, hint = (
            f"could not sign in to Key Vault ({type(exc).__name__})",
            "The function app needs a managed identity (MANAGED_IDENTITY_CLIENT_ID for a "
            "user-assigned one) that may read the vault.",
        )
    except HttpResponseError as exc:
        message, hint = (
            f"Key Vault refused to list secrets ({exc.status_code})",
            KEY_VAULT_HINT,
        )
    except Exception as exc:
        message, hint = (
            f"Key Vault is not reachable ({type(exc).__name__})",
            "Check KEY_VAULT_URL (https://<name>.vault.azure.net) and the vault's network rules.",
        )
    else:
        return Check("key_vault", "pass", f"{settings.key_vault_url} answers")
    return Check("key_vault", "fail", message, hint, "KeyVaultUnreachable")


def check_credential(svc: Services, graph: GraphClient) -> Check:
    """The credential judged with the doctor's own Graph client (a fresh token)."""
    fresh = copy.copy(svc)
    fresh.__dict__["graph"] = graph  # Services builds graph once; this copy uses the doctor's
    status = credential_status(fresh, graph)
    state = status.get("state")
    verdicts: dict[str, CheckStatus] = {"ok": "pass", "warning": "warn", "error": "fail"}
    verdict = verdicts[credential_tone(state)]
    code = (status.get("error") or {}).get("code")
    return Check(
        "credential", verdict, str(status.get("message") or state), str(status.get("hint") or ""),
        code,
    )  # fmt: skip


def run_doctor(svc: Services) -> dict[str, Any]:
    """``GET /api/admin/doctor``. Graph is asked with a client of its own, so a credential or
    permission change shows at once, not when the cached token expires."""
    settings = svc.settings
    graph: GraphClient | None = None
    claims: dict[str, Any] | None = None
    try:
        graph = GraphClient.from_settings(settings)
    except GraphError as error:
        token_check = _failed("token", error)
    else:
        token_check, claims = check_token(graph)
    mappings = sorted(svc.mappings.all(), key=lambda m: m.resource_id)
    active = [m for m in mappings if m.enabled]

    with ThreadPoolExecutor(max_workers=8) as pool:
        background = [
            pool.submit(check_echo, settings),
            pool.submit(check_storage, svc),
            pool.submit(check_key_vault, svc),
        ]
        checks = [token_check, check_permissions(claims, settings)]
        if graph is not None and claims is not None:
            checks += list(pool.map(lambda m: check_mailbox(graph, m), active))
            checks.append(check_subscriptions(svc, graph, active))
        else:
            checks += [
                Check(f"mailbox {m.mailbox}", "warn", f"{m.resource_id}: not checked: no token",
                      "Fix the token check first.")
                for m in active
            ]  # fmt: skip
            checks.append(
                Check(
                    "subscriptions", "warn", "not checked: no token", "Fix the token check first."
                )
            )
        checks += [f.result() for f in background]
        checks.append(
            check_credential(svc, graph)
            if graph is not None
            else Check("credential", "fail", token_check.message, token_check.hint,
                       token_check.code)
        )  # fmt: skip
    verdicts = {c.status for c in checks}
    result: CheckStatus = "fail" if "fail" in verdicts else "warn" if "warn" in verdicts else "pass"
    return {
        "generated_at": iso(_now()),
        "result": result,
        "checks": [c.to_json() for c in checks],
        "deactivated": [m.resource_id for m in mappings if not m.enabled],
    }
