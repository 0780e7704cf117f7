"""`SandboxControl`: a Python client for the control API (`/_sandbox/...`).

Usable against an in-process `Sandbox` (`sb.control`) or one started with `python -m sandbox`
(`SandboxControl("https://127.0.0.1:9443", ".run/sandbox/ca.pem")`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests


class ControlError(RuntimeError):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"sandbox control API answered {status}: {body}")
        self.status = status
        self.body = body


class SandboxControl:
    def __init__(self, url: str, ca_file: Path | str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = str(ca_file)
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        answer = self.session.request(
            method,
            f"{self.url}/_sandbox{path}",
            json=body,
            params=query or None,
            timeout=self.timeout,
        )
        if answer.status_code >= 400:
            try:
                detail: Any = answer.json()
            except ValueError:
                detail = answer.text
            raise ControlError(answer.status_code, detail)
        if answer.status_code == 204 or not answer.content:
            return None
        return answer.json()

    @staticmethod
    def _q(value: str) -> str:
        return quote(value, safe="@")

    # -- tenant ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/health")
        return result

    def info(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/info")
        return result

    def reset(self, seed: bool = True) -> None:
        self._call("POST", "/reset", {"seed": seed})

    def settings(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/settings")
        return result

    def update_settings(self, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("PATCH", "/settings", changes)
        return result

    # -- mailboxes ---------------------------------------------------------------------------

    def add_mailbox(
        self,
        address: str,
        display_name: str | None = None,
        kind: str = "user",
        state: str = "ok",
        room_lists: Iterable[str] = (),
        **extra: Any,
    ) -> dict[str, Any]:
        body = {
            "address": address,
            "displayName": display_name,
            "kind": kind,
            "state": state,
            "roomLists": list(room_lists),
            **extra,
        }
        result: dict[str, Any] = self._call("POST", "/mailboxes", body)
        return result

    def mailboxes(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/mailboxes")["value"])

    def mailbox(self, address: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/mailboxes/{self._q(address)}")
        return result

    def update_mailbox(self, address: str, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("PATCH", f"/mailboxes/{self._q(address)}", changes)
        return result

    def set_mailbox_state(self, address: str, state: str) -> dict[str, Any]:
        return self.update_mailbox(address, state=state)

    def set_meeting_providers(self, address: str, *providers: str) -> dict[str, Any]:
        """The calendar's allowedOnlineMeetingProviders (e.g. "unknown" alone: no Teams)."""
        return self.update_mailbox(address, allowedOnlineMeetingProviders=list(providers))

    def delete_mailbox(self, address: str) -> None:
        self._call("DELETE", f"/mailboxes/{self._q(address)}")

    def add_room_list(self, address: str, display_name: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", "/roomlists", {"address": address, "displayName": display_name}
        )
        return result

    def room_lists(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/roomlists")["value"])

    # -- events as a person ----------------------------------------------------------------

    def create_event(self, mailbox: str, event: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/mailboxes/{self._q(mailbox)}/events", event)
        return result

    def update_event(self, mailbox: str, event_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "PATCH", f"/mailboxes/{self._q(mailbox)}/events/{self._q(event_id)}", changes
        )
        return result

    def delete_event(self, mailbox: str, event_id: str) -> None:
        self._call("DELETE", f"/mailboxes/{self._q(mailbox)}/events/{self._q(event_id)}")

    def events(self, mailbox: str) -> list[dict[str, Any]]:
        """Every event in the mailbox's calendar, raw (masters, exceptions, app-made ones too);
        not those in Deleted Items (`deleted_events`)."""
        return list(self._call("GET", f"/mailboxes/{self._q(mailbox)}/events")["value"])

    def deleted_events(self, mailbox: str) -> list[dict[str, Any]]:
        """The events in the mailbox's Deleted Items, raw."""
        return list(self._call("GET", f"/mailboxes/{self._q(mailbox)}/deleted")["value"])

    def event(self, mailbox: str, event_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "GET", f"/mailboxes/{self._q(mailbox)}/events/{self._q(event_id)}"
        )
        return result

    def view(self, mailbox: str, start: str, end: str) -> list[dict[str, Any]]:
        """The calendar view (occurrences expanded) between two instants, as Graph renders it."""
        return list(
            self._call("GET", f"/mailboxes/{self._q(mailbox)}/view", start=start, end=end)["value"]
        )

    def invalidate_delta(self, mailbox: str) -> int:
        return int(
            self._call("POST", f"/mailboxes/{self._q(mailbox)}/invalidate-delta")["invalidated"]
        )

    # -- faults ------------------------------------------------------------------------------

    def add_fault(
        self,
        path: str = ".*",
        method: str = "*",
        *,
        mailbox: str | None = None,
        action: str | None = None,
        status: int | None = None,
        retry_after: int | float | str | None = None,
        delay: float | None = None,
        count: int | None = None,
        probability: float | None = None,
        code: str | None = None,
        message: str | None = None,
    ) -> dict[str, Any]:
        """Inject a fault. `action`: status (default when `status` is given), delay, timeout,
        reset. Without `count` or `probability` it fires once."""
        body = {
            "path": path,
            "method": method,
            "mailbox": mailbox,
            "action": action,
            "status": status,
            "retryAfter": retry_after,
            "delay": delay,
            "count": count,
            "probability": probability,
            "code": code,
            "message": message,
        }
        result: dict[str, Any] = self._call(
            "POST", "/faults", {k: v for k, v in body.items() if v is not None}
        )
        return result

    def faults(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/faults")["value"])

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def remove_fault(self, fault_id: str) -> None:
        self._call("DELETE", f"/faults/{fault_id}")

    # -- subscriptions and notifications ---------------------------------------------------

    def subscriptions(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/subscriptions")["value"])

    def send_lifecycle(self, subscription_id: str, event: str, pause: bool = False) -> None:
        """reauthorizationRequired (pause=True also pauses notifications until reauthorized),
        subscriptionRemoved (also removes the subscription) or missed."""
        self._call(
            "POST", f"/subscriptions/{subscription_id}/lifecycle", {"event": event, "pause": pause}
        )

    def expire_subscription(self, subscription_id: str) -> None:
        self._call("POST", f"/subscriptions/{subscription_id}/expire")

    def deliveries(self, since: int = 0) -> list[dict[str, Any]]:
        return list(self._call("GET", "/deliveries", since=since or None)["value"])

    def clear_deliveries(self) -> None:
        self._call("DELETE", "/deliveries")

    def wait_for_deliveries(
        self,
        predicate: Callable[[list[dict[str, Any]]], bool] | None = None,
        timeout: float = 10.0,
        since: int = 0,
    ) -> list[dict[str, Any]]:
        """Poll the delivery records until `predicate` holds (default: at least one)."""
        check = predicate or (bool)
        deadline = time.monotonic() + timeout
        while True:
            records = self.deliveries(since)
            if check(records):
                return records
            if time.monotonic() > deadline:
                raise TimeoutError(f"deliveries did not arrive in {timeout} s: {records}")
            time.sleep(0.05)

    # -- request log -------------------------------------------------------------------------

    def requests(
        self, mailbox: str | None = None, since: int = 0, kind: str | None = None
    ) -> list[dict[str, Any]]:
        return list(
            self._call("GET", "/requests", mailbox=mailbox, since=since or None, kind=kind)["value"]
        )

    def clear_requests(self) -> None:
        self._call("DELETE", "/requests")

    # -- the app registration --------------------------------------------------------------

    def app(self, client_id: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/apps/{client_id or '_'}")
        return result

    def set_roles(self, roles: Iterable[str], client_id: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "PUT", f"/apps/{client_id or '_'}/roles", {"roles": list(roles)}
        )
        return result

    def scope_calendars(
        self,
        mailboxes: Iterable[str],
        *,
        role: str = "Calendars.ReadWrite",
        keep_entra_grant: bool = False,
        client_id: str | None = None,
    ) -> dict[str, Any]:
        """Exchange Online RBAC for Applications: assign the app the role ``Application
        {role}`` limited to ``mailboxes`` (a management scope). Unless ``keep_entra_grant``, the
        same permission is removed from the app's Entra roles, so new tokens lack it."""
        result: dict[str, Any] = self._call(
            "PUT",
            f"/apps/{client_id or '_'}/exchange-roles/{role}",
            {"mailboxes": list(mailboxes), "keepEntraGrant": keep_entra_grant},
        )
        return result

    def change_scope(
        self,
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        role: str = "Calendars.ReadWrite",
        client_id: str | None = None,
    ) -> dict[str, Any]:
        """Add mailboxes to, or remove them from, the scope of an Exchange role assignment."""
        result: dict[str, Any] = self._call(
            "PATCH",
            f"/apps/{client_id or '_'}/exchange-roles/{role}",
            {"add": list(add), "remove": list(remove)},
        )
        return result

    def exchange_roles(self, client_id: str | None = None) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/apps/{client_id or '_'}/exchange-roles")["value"])

    def remove_exchange_role(
        self, role: str = "Calendars.ReadWrite", client_id: str | None = None
    ) -> None:
        self._call("DELETE", f"/apps/{client_id or '_'}/exchange-roles/{role}")

    def update_app(self, client_id: str | None = None, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("PATCH", f"/apps/{client_id or '_'}", changes)
        return result

    def add_secret(
        self,
        display_name: str | None = None,
        *,
        expires_in_days: float | None = None,
        expires_in_seconds: float | None = None,
        end: str | None = None,
        secret_text: str | None = None,
        client_id: str | None = None,
    ) -> dict[str, Any]:
        """A new client secret; the answer includes `secretText` and `keyId`."""
        body = {
            "displayName": display_name,
            "expiresInDays": expires_in_days,
            "expiresInSeconds": expires_in_seconds,
            "endDateTime": end,
            "secretText": secret_text,
        }
        result: dict[str, Any] = self._call(
            "POST",
            f"/apps/{client_id or '_'}/secrets",
            {k: v for k, v in body.items() if v is not None},
        )
        return result

    def expire_secret(self, key_id: str, client_id: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", f"/apps/{client_id or '_'}/secrets/{key_id}/expire"
        )
        return result

    def remove_secret(self, key_id: str, client_id: str | None = None) -> None:
        self._call("DELETE", f"/apps/{client_id or '_'}/secrets/{key_id}")

    def add_certificate(
        self, certificate_pem: str, display_name: str | None = None, client_id: str | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST",
            f"/apps/{client_id or '_'}/certificates",
            {"certificate": certificate_pem, "displayName": display_name},
        )
        return result

    def add_federated_credential(
        self,
        issuer: str,
        subject: str,
        audiences: Iterable[str] = ("api://AzureADTokenExchange",),
        name: str = "federated",
        client_id: str | None = None,
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST",
            f"/apps/{client_id or '_'}/federated-credentials",
            {"issuer": issuer, "subject": subject, "audiences": list(audiences), "name": name},
        )
        return result

    # -- the Key Vault double ----------------------------------------------------------------

    def vault_secrets(self) -> list[dict[str, Any]]:
        """Every secret in the vault with its versions' attributes (no values)."""
        return list(self._call("GET", "/keyvault/secrets")["value"])

    def vault_secret(self, name: str) -> list[dict[str, Any]]:
        """One secret's versions, oldest first, with their values (a test's view)."""
        return list(self._call("GET", f"/keyvault/secrets/{self._q(name)}")["versions"])

    def set_vault_secret(
        self,
        name: str,
        value: str,
        *,
        content_type: str | None = None,
        expires_on: str | None = None,
        expires_in_days: float | None = None,
        enabled: bool = True,
        tags: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Store a new version, as an admin would in the portal (no token needed)."""
        body = {
            "value": value,
            "contentType": content_type,
            "expiresOn": expires_on,
            "expiresInDays": expires_in_days,
            "enabled": enabled,
            "tags": tags,
        }
        result: dict[str, Any] = self._call(
            "PUT",
            f"/keyvault/secrets/{self._q(name)}",
            {k: v for k, v in body.items() if v is not None},
        )
        return result

    def deny_vault(self, *operations: str) -> list[str]:
        """Refuse these data-plane operations (get, list, set, update) with 403 ForbiddenByRbac;
        no arguments allows everything again."""
        return list(self._call("PATCH", "/keyvault", {"deny": list(operations)})["denied"])

    def managed_identities(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/managed-identities")["value"])

    def managed_identity_token(
        self, client_id: str | None = None, resource: str = "api://AzureADTokenExchange"
    ) -> dict[str, Any]:
        """What the app's managed identity gets from IDENTITY_ENDPOINT (App Service protocol)."""
        result: dict[str, Any] = self._call(
            "GET",
            "/msi/token",
            resource=resource,
            client_id=client_id,
            **{"api-version": "2019-08-01"},
        )
        return result
