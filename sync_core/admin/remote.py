"""The admin operations of a deployed app, over its HTTP admin API (docs/api.md).

:class:`Remote` has the methods the CLI calls on the app's own storage and Graph, with the same
JSON documents in and out, so ``python -m sync_core --url …`` prints the same as a local run.
A refusal arrives as the API's ``application/problem+json`` document and is raised as
:class:`RemoteProblem`; an answer that is not the API's (a wrong key, a wrong URL, the platform
in front of the app) is turned into one that says what to check.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from sync_core.admin.progress import Progress
from sync_core.problems import FieldError, Problem

CONNECT_TIMEOUT = 10.0
# Purge and resync walk a whole resource; Azure's front end answers 504 after 230 s anyway.
READ_TIMEOUT = 300.0
KEY_HEADER = "x-functions-key"
USER_AGENT = "calendar-sync-cli"

KEY_HINT = (
    "Use the app's admin key (function app → App keys → Host keys → admin) with --key or "
    "SYNC_ADMIN_KEY. The booking platform's key opens the booking route only."
)


class RemoteProblem(Problem):
    """A problem document the app answered, or one made for an answer that was not the API's.

    ``exit_code`` is what the CLI exits with: 1 as for any failed operation, 2 when the command
    line is wrong (a key the app refuses, a URL that is not this app)."""

    def __init__(self, document: dict[str, Any], exit_code: int = 1) -> None:
        detail = str(document.get("detail") or document.get("title") or "the request failed")
        errors = [
            FieldError(str(e.get("field", "")), str(e.get("message", "")))
            for e in document.get("errors") or []
            if isinstance(e, dict)
        ]
        super().__init__(detail, errors)
        self.document = document
        self.exit_code = exit_code

    @property
    def code(self) -> str:
        return str(self.document.get("code") or "")

    @property
    def hint(self) -> str:
        return str(self.document.get("hint") or "")

    def to_json(self) -> dict[str, Any]:
        return self.document


def _made(status: int, title: str, detail: str, hint: str, exit_code: int) -> RemoteProblem:
    document = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "hint": hint,
    }
    return RemoteProblem(document, exit_code)


def base_url(url: str) -> str:
    """The app's origin from what was given (``https://app.azurewebsites.net[/api][/]``)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            "--url must be the app's http(s) address, like https://<app>.azurewebsites.net "
            f"(got {url!r})"
        )
    path = parts.path.rstrip("/")
    if path.lower().endswith("/api"):
        path = path[: -len("/api")]
    return f"{parts.scheme}://{parts.netloc}{path}"


class Remote:
    """The admin API of the app at ``url``, with a host key and/or an Entra access token."""

    def __init__(
        self,
        url: str,
        *,
        key: str | None = None,
        token: Callable[[], str] | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.base = base_url(url)
        self.key = key
        self.token = token
        self.session = session or requests.Session()

    # -- the operations ------------------------------------------------------------------------

    def rooms(self, resource_ids: list[str]) -> dict[str, Any]:
        query = {"resource_ids": ",".join(resource_ids)} if resource_ids else {}
        return self._call("GET", "/api/admin/rooms", params=query)[1]

    def get_mapping(self, resource_id: str) -> dict[str, Any] | None:
        """The mapping (with its ``etag``), or None when the resource is not mapped."""
        try:
            _, document = self._call("GET", self._mapping(resource_id))
        except RemoteProblem as problem:
            if problem.document.get("status") == 404 and problem.exit_code == 1:
                return None
            raise
        return document

    def save_mapping(
        self,
        resource_id: str,
        body: dict[str, Any],
        *,
        if_match: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """The saved mapping with ``created``, ``warnings`` and ``bookings_queued``."""
        headers = {"If-Match": if_match} if if_match else {}
        status, document = self._call("PUT", self._mapping(resource_id), json=body, headers=headers)
        extra = ("warnings", "bookings_queued")
        mapping = {k: v for k, v in document.items() if k not in extra}
        return {
            **mapping,
            "created": status == 201,
            "warnings": document.get("warnings") or [],
            "bookings_queued": document.get("bookings_queued", 0),
        }

    def remove_mapping(
        self, resource_id: str, *, purge: bool = False, progress: Progress | None = None
    ) -> dict[str, Any] | None:
        """What a purge deleted, or None without purge."""
        params = {"purge": "true"} if purge else {}
        status, document = self._call("DELETE", self._mapping(resource_id), params=params)
        return document if status == 200 else None

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/api/admin/status")[1]

    def history(
        self, *, resource_id: str | None, limit: int, continuation: str | None
    ) -> dict[str, Any]:
        params: dict[str, str] = {"limit": str(limit)}
        if resource_id is not None:
            params["resource_id"] = resource_id
        if continuation:
            params["continuation"] = continuation
        return self._call("GET", "/api/admin/history", params=params)[1]

    def doctor(self) -> dict[str, Any]:
        return self._call("GET", "/api/admin/doctor")[1]

    def platform_test(self) -> dict[str, Any]:
        return self._call("POST", "/api/admin/platform/test")[1]

    def resync(self, resource_id: str, *, progress: Progress | None = None) -> dict[str, Any]:
        return self._call("POST", f"{self._mapping(resource_id)}/resync")[1]

    def bulk_map(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/api/admin/mappings/bulk", json=body)[1]

    def bulk_deactivate(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/api/admin/mappings/bulk-deactivate", json=body)[1]

    def bulk_delete(self, body: dict[str, Any], *, purge: bool = False) -> dict[str, Any]:
        params = {"purge": "true"} if purge else {}
        return self._call("POST", "/api/admin/mappings/bulk-delete", params=params, json=body)[1]

    def availability(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/api/availability", json=body)[1]

    # -- HTTP ----------------------------------------------------------------------------------

    @staticmethod
    def _mapping(resource_id: str) -> str:
        return f"/api/admin/mappings/{quote(resource_id, safe='')}"

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if self.key:
            headers[KEY_HEADER] = self.key
        if self.token is not None:
            try:
                token = self.token()
            except Exception as exc:  # azure-identity's errors: no sign-in, wrong scope, ...
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise _made(
                    401,
                    "No Entra token",
                    f"cannot get an Entra token: {type(exc).__name__}: {first}",
                    "Sign in with `az login` (or set up another DefaultAzureCredential source), "
                    "and check --entra-scope: the Application ID URI the app accepts, + "
                    "'/.default'.",
                    2,
                ) from None
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """(status, JSON document) of a 2xx answer; RemoteProblem for anything else."""
        url = self.base + path
        try:
            answer = self.session.request(
                method,
                url,
                params=params,
                json=json,
                headers={**self._headers(), **(headers or {})},
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise _made(
                503,
                "The app cannot be reached",
                f"cannot reach {self.base}: {type(exc).__name__}",
                "Check --url (the function app's address) and your network; the app may be "
                "starting.",
                1,
            ) from None
        document = _document(answer)
        if 200 <= answer.status_code < 300:
            if answer.status_code == 204:
                return 204, {}
            if document is None:
                raise self._not_the_api(answer)
            return answer.status_code, document
        if document is not None and _is_problem(answer, document):
            raise RemoteProblem(document)
        raise self._not_the_api(answer)

    def _not_the_api(self, answer: requests.Response) -> RemoteProblem:
        status = answer.status_code
        what = f"{answer.request.method} {urlsplit(answer.url).path} answered {status}"
        if status in (401, 403):
            refused = "no key" if not (self.key or self.token) else "the key or sign-in"
            return _made(
                status,
                "Not authorized",
                f"the app refused {refused} ({what})",
                KEY_HINT,
                2,
            )
        if status == 404 or 300 <= status < 400:
            return _made(
                status,
                "Not the admin API",
                f"{self.base} has no admin API ({what})",
                "Check --url: it is the function app's address, like "
                "https://<app>.azurewebsites.net.",
                2,
            )
        return _made(
            status,
            "Unexpected answer",
            f"the app gave an answer that is not the admin API's ({what})",
            "Try again; if it stays, look at the function app's log.",
            1,
        )


def entra_token(scope: str, credential: Any = None) -> Callable[[], str]:
    """A source of Entra access tokens for ``scope``, from ``DefaultAzureCredential`` (Azure CLI
    sign-in, environment, managed identity, ...) unless a credential is given; a token is
    reused until five minutes before it expires."""
    import time

    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
    held: dict[str, Any] = {}

    def token() -> str:
        if not held or held["expires_on"] - 300 < time.time():
            issued = credential.get_token(scope)
            held.update(token=issued.token, expires_on=issued.expires_on)
        return str(held["token"])

    return token


def _document(answer: requests.Response) -> dict[str, Any] | None:
    kind = answer.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if not kind.endswith("json") or not answer.content:
        return None
    try:
        document = json.loads(answer.content)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _is_problem(answer: requests.Response, document: dict[str, Any]) -> bool:
    kind = answer.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    return kind == "application/problem+json" or ("type" in document and "status" in document)
