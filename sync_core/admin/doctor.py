"""The doctor (SPEC §6): one check per thing the service needs (token, permissions, mailboxes,
subscriptions, the notification URL's echo, storage, Key Vault, the credential), each with a
readable fix.

Where ``Calendars.ReadWrite`` comes from is the setting ``MAILBOX_SCOPE`` (docs/permissions.md):
with ``rbac`` Exchange grants it per mailbox of its management scope and the token carries no
calendar role, so calendar access is proven by reading each mapped calendar, and a denied
mailbox is one to add to the scoped group, never a reason to grant the permission tenant-wide.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import requests

from sync_core.admin.status import credential_tone
from sync_core.clock import iso, now
from sync_core.credentials.sources import source_for
from sync_core.credentials.status import credential_status, key_vault_status
from sync_core.domain.outbound import NO_TEAMS
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
CALENDARS = "Calendars.ReadWrite"
CALENDARS_READ = "Calendars.Read"  # enough when every mapping only reads Outlook (from_outlook)
REQUIRED_ROLES = {
    "Calendars.ReadWrite": "read and write the mapped calendars",
    "Place.Read.All": "discover rooms and room lists",
    "User.Read.All": "resolve users and check mailboxes",
}
OPTIONAL_ROLES = {
    "Application.ReadWrite.OwnedBy": "read the credential's expiry and rotate the secret",
}
ROLE_ALTERNATIVES = {
    "Calendars.Read": {"Calendars.ReadWrite"},
    "Application.ReadWrite.OwnedBy": {"Application.ReadWrite.All"},
    "User.Read.All": {"User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"},
}
GRANT_WHERE = (
    "Entra admin center → App registrations → {app} → API permissions → Add a permission → "
    "Microsoft Graph → Application permissions: add {roles}, then 'Grant admin consent'."
)
SCOPE_SCRIPT = "infra/scripts/mailbox-scope.sh"
# What an out-of-scope mailbox needs, per MAILBOX_SCOPE (rbac and policy scope to one group).
OUT_OF_SCOPE_HINT = {
    "rbac": (
        "Add {mailbox} as a direct member of the mail-enabled security group that the app's "
        "Exchange management scope names (Exchange Online PowerShell: Add-DistributionGroupMember "
        "-Identity <group> -Member {mailbox}; members of nested groups are not in scope), then "
        "check it with `" + SCOPE_SCRIPT + " --client-id {client_id} --test {mailbox}`. Exchange "
        "applies scope changes within 30 minutes to 2 hours. Calendars.ReadWrite stays out of "
        "Entra ID: Exchange grants it for the mailboxes of the scope."
    ),
    "policy": (
        "Add {mailbox} as a direct member of the mail-enabled security group of the app's "
        "ApplicationAccessPolicy (Add-DistributionGroupMember -Identity <group> -Member "
        "{mailbox}), then check it with `" + SCOPE_SCRIPT + " --method policy --client-id "
        "{client_id} --test {mailbox}`. Exchange applies the change within 30 minutes to 2 hours."
    ),
}
SCOPE_NAMES = {
    "rbac": "Exchange RBAC for Applications (MAILBOX_SCOPE=rbac)",
    "policy": "an Entra grant restricted by an ApplicationAccessPolicy (MAILBOX_SCOPE=policy)",
    "tenant": "an Entra grant over every mailbox (MAILBOX_SCOPE=tenant)",
}
SIGN_IN = {
    "secret": "its client secret",
    "certificate": "its certificate",
    "managed_identity": "the managed identity's federated credential",
}
TEAMS_HISTORY = 50  # recent history entries of a mapping searched for a Teams request


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


def _registration(settings: Settings) -> str:
    """The app registration as the admin finds it, with how this deployment signs in as it."""
    if settings.credential_mode == "managed_identity":
        return (
            f"the app registration {settings.client_id} (the managed identity "
            f"{settings.managed_identity_client_id} signs in as it and holds no Graph "
            "permission itself)"
        )
    return f"the app registration {settings.client_id}"


def check_token(graph: GraphClient) -> tuple[Check, dict[str, Any] | None]:
    """A fresh token (not a cached one): proves the credential works right now."""
    try:
        claims = graph.tokens.claims()
    except GraphError as error:
        return _failed("token", error), None
    settings = graph.settings
    how = SIGN_IN.get(settings.credential_mode, settings.credential_mode)
    return (
        Check(
            "token",
            "pass",
            f"a token was issued by {settings.authority_host} for "
            f"{_registration(settings)}, signed in with {how}",
        ),
        claims,
    )


def calendar_role(mappings: list[Mapping] | None) -> str:
    """The least calendar permission the enabled mappings need (SPEC §9): read-only access when
    every one of them only reads Outlook, read and write otherwise (also with no mapping yet)."""
    active = [m for m in mappings or [] if m.enabled]
    if active and not any(m.writes_outlook for m in active):
        return CALENDARS_READ
    return CALENDARS


def check_permissions(
    claims: dict[str, Any] | None,
    settings: Settings,
    mailboxes: list[Check] | None = None,
    mappings: list[Mapping] | None = None,
) -> Check:
    """The token's application permissions, judged by where calendars are granted
    (``MAILBOX_SCOPE``) and by what the mappings need (``calendar_role``). ``mailboxes`` are the
    mailbox checks: with ``rbac`` they are what proves calendar access; otherwise, when every
    one passed without the role, the setting is wrong."""
    if claims is None:
        return Check("permissions", "warn", "not checked: no token", "Fix the token check first.")
    roles = {str(r) for r in claims.get("roles") or []}
    scoped = settings.mailbox_scope == "rbac"
    calendars = calendar_role(mappings)

    def has(role: str) -> bool:
        return role in roles or bool(ROLE_ALTERNATIVES.get(role, set()) & roles)

    wanted_roles = dict(REQUIRED_ROLES)
    if calendars == CALENDARS_READ:
        del wanted_roles[CALENDARS]
        wanted_roles = {CALENDARS_READ: "read the mapped calendars (every mapping only reads "
                        "Outlook)", **wanted_roles}  # fmt: skip
    required = {r: why for r, why in wanted_roles.items() if not (scoped and r == calendars)}
    missing = [r for r in required if not has(r)]
    optional = [r for r in OPTIONAL_ROLES if not has(r)]
    granted = ", ".join(sorted(roles)) or "nothing"

    def needed(lacking: list[str], what: dict[str, str]) -> str:
        return "; ".join(f"{r} ({what[r]})" for r in lacking)

    def grant(lacking: list[str]) -> str:
        return GRANT_WHERE.format(app=_registration(settings), roles=", ".join(lacking))

    reached = bool(mailboxes) and all(c.status != "fail" for c in mailboxes or [])
    if missing == [calendars] and reached and not has(CALENDARS_READ):
        return Check(
            "permissions",
            "warn",
            f"granted in Entra ID: {granted}; no {calendars} in the token, yet every "
            "mapped calendar answered: Exchange grants it (RBAC for Applications), while "
            f"MAILBOX_SCOPE says {settings.mailbox_scope}",
            "Set MAILBOX_SCOPE=rbac (the set-up of app-registration.sh --mailbox-scope rbac), "
            "so that the doctor judges calendar access by the mailbox scope. Nothing needs to "
            "be granted.",
            "MailboxScopeSetting",
        )
    if missing:
        message = f"missing application permissions: {needed(missing, required)}"
        hint = grant(missing)
        if calendars in missing:
            hint += (
                " If Exchange RBAC for Applications grants calendars for a scoped group instead "
                "(app-registration.sh --mailbox-scope rbac), set MAILBOX_SCOPE=rbac and grant "
                "nothing."
            )
        return Check("permissions", "fail", message, hint, "PermissionMissing")
    if scoped and (has(CALENDARS) or has(CALENDARS_READ)):
        return Check(
            "permissions",
            "warn",
            f"granted in Entra ID: {granted}; Calendars.ReadWrite is granted tenant-wide in "
            "Entra ID, so the app reaches every mailbox: grants from Entra ID and Exchange add "
            "up, and the Exchange scope narrows nothing",
            f"Remove Calendars.ReadWrite from {_registration(settings)} (Entra admin center → "
            "App registrations → API permissions → Calendars.ReadWrite → Remove permission, or "
            "run infra/scripts/app-registration.sh --mailbox-scope rbac). Exchange keeps "
            "granting it for the mailboxes of the scope.",
            "ScopeBypassed",
        )
    source = (
        "; Calendars.ReadWrite from Exchange RBAC for Applications, for the mailboxes of its "
        "scope (each mapped mailbox is checked below)"
        if scoped
        else ""
    )
    if calendars == CALENDARS_READ and CALENDARS in roles and not scoped:
        return Check(
            "permissions",
            "warn",
            f"granted in Entra ID: {granted}; every mapping only reads Outlook "
            "(direction from_outlook), so Calendars.ReadWrite grants more than is used",
            f"Grant Calendars.Read instead of Calendars.ReadWrite to {_registration(settings)} "
            "(and consent again), unless mappings that write bookings are planned.",
            "MoreThanNeeded",
        )
    if optional:
        message = (
            f"granted in Entra ID: {granted}{source}; "
            f"optional and missing: {needed(optional, OPTIONAL_ROLES)}"
        )
        hint = " Without it, check the secret's expiry yourself and rotate it by hand."
        return Check("permissions", "warn", message, grant(optional) + hint)
    return Check("permissions", "pass", f"granted in Entra ID: {granted}{source}")


def teams_asked(svc: Services, mapping: Mapping) -> bool:
    """Whether bookings of ``mapping`` ask for Teams meetings: a recent write was told the
    calendar offers none, or an event written for it holds a join URL."""
    try:
        entries, _ = svc.history.page(resource_id=mapping.resource_id, page_size=TEAMS_HISTORY)
        if any(NO_TEAMS["message"] in e.detail for e in entries):
            return True
        return any(link.join_url for link in svc.links.for_resource(mapping.resource_id))
    except Exception:  # storage trouble shows in its own check; warn rather than stay silent
        return True


def check_mailbox(
    graph: GraphClient,
    mapping: Mapping,
    asks_teams: Callable[[Mapping], bool] = lambda _: True,
) -> Check:
    """One small read of the mapped calendar: it exists, is in Exchange Online and in the app's
    scope (with ``MAILBOX_SCOPE=rbac`` this read is the proof of calendar access). Where its
    bookings ask for Teams (``asks_teams``), a calendar without Teams is a warning."""
    name = f"mailbox {mapping.mailbox}"
    settings = graph.settings
    try:
        calendar = graph.check_mailbox(mapping.mailbox)
    except GraphError as error:
        error.mailbox = error.mailbox or mapping.mailbox
        scope_hint = OUT_OF_SCOPE_HINT.get(settings.mailbox_scope)
        if error.code == "ErrorAccessDenied" and scope_hint:
            return Check(
                name,
                "fail",
                f"{mapping.resource_id}: mailbox {mapping.mailbox} is outside the app's mailbox "
                f"scope ({SCOPE_NAMES[settings.mailbox_scope]}): Exchange denied access",
                scope_hint.format(mailbox=mapping.mailbox, client_id=settings.client_id),
                error.code,
            )
        check = _failed(name, error)
        return Check(
            name,
            "fail",
            f"{mapping.resource_id}: {check.message}",
            check.hint,
            check.code,
        )
    reached = f"{mapping.resource_id}: reachable, calendar readable"
    providers = calendar.get("allowedOnlineMeetingProviders")
    if isinstance(providers, list) and "teamsForBusiness" not in providers:
        if not asks_teams(mapping):
            return Check(
                name, "pass", f"{reached}; it does not offer Teams (no booking asked for Teams)"
            )
        return Check(
            name,
            "warn",
            f"{reached}; its bookings ask for Teams meetings, but the calendar does not offer "
            "Teams (allowedOnlineMeetingProviders lacks teamsForBusiness), so they get their "
            "event without one",
            "Room mailboxes often lack Teams. Give the mailbox a Teams licence, or book Teams "
            "meetings in an organiser's calendar instead.",
            "TeamsUnavailable",
        )
    return Check(name, "pass", reached)


def check_subscriptions(svc: Services, graph: GraphClient, active: list[Mapping]) -> Check:
    """The subscription of every mailbox an enabled mapping reads is alive (FAIL otherwise;
    mappings that only write need none); Graph holds no subscription for this app that no
    enabled mapping owns (WARN: an unmapped mailbox's, or a duplicate beside a mailbox's
    recorded one)."""
    from sync_core.inbound import subscriptions

    try:
        listed = list(graph.subscriptions())
    except GraphError as error:
        return _failed("subscriptions", error)
    alive = {str(s.get("id")): s for s in listed}
    records = {r.mailbox: r for r in svc.subscriptions.all()}
    moment = now()
    problems = []
    # One subscription per mailbox that an enabled mapping reads (resources may share one).
    readers = list({m.mailbox: m for m in active if m.reads_outlook}.values())
    for mapping in readers:
        record = records.get(mapping.mailbox)
        if record is None:
            problems.append(f"{mapping.resource_id}: no subscription")
        elif record.expires_at <= moment:
            problems.append(f"{mapping.resource_id}: expired at {iso(record.expires_at)}")
        elif record.subscription_id not in alive:
            problems.append(f"{mapping.resource_id}: Graph no longer knows the subscription")
        elif alive[record.subscription_id].get("notificationUrl") != svc.settings.notification_url:
            problems.append(f"{mapping.resource_id}: it notifies another URL")
    unowned = subscriptions.unowned(svc, listed)
    summary = f"{len(readers) - len(problems)} of {len(readers)} alive"
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
        if graph is not None and claims is not None:
            client = graph
            mailboxes = list(
                pool.map(lambda m: check_mailbox(client, m, lambda m: teams_asked(svc, m)), active)
            )
            subscriptions = check_subscriptions(svc, client, active)
        else:
            mailboxes = [
                Check(f"mailbox {m.mailbox}", "warn", f"{m.resource_id}: not checked: no token",
                      "Fix the token check first.")
                for m in active
            ]  # fmt: skip
            subscriptions = Check(
                "subscriptions", "warn", "not checked: no token", "Fix the token check first."
            )
        checks = [
            token_check,
            check_permissions(claims, settings, mailboxes, mappings),
            *mailboxes,
            subscriptions,
        ]
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
