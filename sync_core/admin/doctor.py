"""The doctor (SPEC §6): one check per thing the service needs (token, permissions, mailboxes,
subscriptions, the notification URL's echo, storage, Key Vault, the credential), each with a
readable fix."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import requests

from sync_core.admin.status import credential_tone
from sync_core.clock import iso, now
from sync_core.credentials.sources import source_for
from sync_core.credentials.status import credential_status, key_vault_status
from sync_core.graph import GraphClient, GraphError
from sync_core.store.mappings import Mapping
from sync_core.store.queues import SYNC_MAILBOX

if TYPE_CHECKING:
    from sync_core.config import Settings
    from sync_core.services import Services

CheckStatus = Literal["pass", "warn", "fail"]
ECHO_TIMEOUT = 10.0  # what Graph allows the notification URL for its validation request
KEY_VAULT_HINT = (
    "Grant the app's identity 'Key Vault Secrets User' (or 'Key Vault Secrets Officer' for "
    "rotation) on the vault, and check its network rules."
)


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

    def needed(lacking: list[str], what: dict[str, str]) -> str:
        return "; ".join(f"{r} ({what[r]})" for r in lacking)

    def grant(lacking: list[str]) -> str:
        return GRANT_WHERE.format(app=f"the app {settings.client_id}", roles=", ".join(lacking))

    if missing:
        message = f"missing application permissions: {needed(missing, REQUIRED_ROLES)}"
        return Check("permissions", "fail", message, grant(missing), "PermissionMissing")
    if optional:
        message = (
            f"granted: {', '.join(sorted(roles))}; "
            f"optional and missing: {needed(optional, OPTIONAL_ROLES)}"
        )
        hint = " Without it, check the secret's expiry yourself and rotate it by hand."
        return Check("permissions", "warn", message, grant(optional) + hint)
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
    from sync_core.inbound import subscriptions

    try:
        listed = list(graph.subscriptions())
    except GraphError as error:
        return _failed("subscriptions", error)
    alive = {str(s.get("id")): s for s in listed}
    records = {r.mailbox: r for r in svc.subscriptions.all()}
    moment = now()
    problems = []
    for mapping in active:
        record = records.get(mapping.mailbox)
        if record is None:
            problems.append(f"{mapping.resource_id}: no subscription")
        elif record.expires_at <= moment:
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
    """Key Vault answers to the app's identity."""
    settings = svc.settings
    try:
        found = key_vault_status(svc)
    except Exception as exc:  # the doctor reports what it finds; it does not fail itself
        found = {"state": "error", "error": {"code": type(exc).__name__, "message": str(exc)}}
    if found["state"] == "not_configured":
        return Check(
            "key_vault", "pass", "not configured (KEY_VAULT_URL is empty): secrets come from "
            "app settings and the secret is not rotated automatically",
        )  # fmt: skip
    if found["state"] == "ok":
        return Check("key_vault", "pass", f"{settings.key_vault_url} answers")
    error = found.get("error") or {}
    return Check(
        "key_vault",
        "fail",
        str(error.get("message") or "Key Vault does not answer"),
        str(error.get("hint") or KEY_VAULT_HINT),
        str(error.get("code") or "KeyVaultUnreachable"),
    )


def check_credential(svc: Services, graph: GraphClient) -> Check:
    """The credential judged with the doctor's own Graph client (a fresh token)."""
    status = credential_status(svc, graph=graph)
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
        graph = GraphClient.from_settings(settings, source_for(settings))
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
        "generated_at": iso(now()),
        "result": result,
        "checks": [c.to_json() for c in checks],
        "deactivated": [m.resource_id for m in mappings if not m.enabled],
    }
