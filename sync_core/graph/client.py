"""The one Microsoft Graph client: auth, retries, per-mailbox concurrency, paging, $batch, delta.

Every call to Graph goes through :meth:`GraphClient.request`, which holds the product's rules:
``Prefer: IdType="ImmutableId"`` and UTC times on every request, at most four requests in flight
per mailbox, Retry-After honoured on 429/503/504 (else exponential backoff with jitter) within a
bounded budget, and one token refresh on a 401. Failures surface as :class:`GraphError` with a
kind that says whether retrying can help.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote

import requests

from sync_core import telemetry
from sync_core.clock import iso
from sync_core.config import Settings
from sync_core.graph.auth import CredentialSource, TokenProvider
from sync_core.graph.errors import ErrorKind, GraphError, error_from_response
from sync_core.graph.retry import RETRY_STATUSES, RetryPolicy, parse_retry_after
from sync_core.identity import pooled_session

log = logging.getLogger(__name__)

API_VERSION = "v1.0"
MAX_BATCH = 20  # Graph's limit per $batch request
BATCH_CONCURRENCY = 4  # $batch requests in flight at once
MAILBOX_CONCURRENCY = 4  # Outlook's limit per app and mailbox


class MailboxSlots(Protocol):
    """Where the limit of requests in flight per mailbox is kept: in this process
    (:class:`LocalSlots`) or across every instance (``sync_core.store.mailbox_slots``)."""

    def hold(self, mailbox: str) -> AbstractContextManager[None]: ...


class LocalSlots:
    """At most ``MAILBOX_CONCURRENCY`` requests per mailbox in flight in this process."""

    def __init__(self) -> None:
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, mailbox: str) -> Iterator[None]:
        key = mailbox.lower()
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = threading.BoundedSemaphore(MAILBOX_CONCURRENCY)
        with slot:
            yield


TIMEOUT = (5.0, 30.0)  # connect, read


def event_path(mailbox: str, event_id: str) -> str:
    """An event addressed within the mailbox's calendar: an event a person deleted sits in
    Deleted Items under the same immutable id, and must not count as present there."""
    return f"{user_path(mailbox)}/calendar/events/{quote(event_id, safe='')}"


PLACES_PAGE = 100  # the places API's default and documented page size


def user_path(mailbox: str) -> str:
    return f"/users/{quote(mailbox, safe='@')}"


def new_session(pool_size: int = 32) -> requests.Session:
    """A pooled session; TLS verification honours REQUESTS_CA_BUNDLE (the simulated tenant's CA)."""
    session = pooled_session(pool_size)
    session.headers["User-Agent"] = "calendar-sync/0.1"
    return session


@dataclass(frozen=True)
class BatchRequest:
    id: str
    method: str
    url: str  # relative to the API version, e.g. "/users/room@contoso.com/events/AAMk..."
    body: Any = None
    mailbox: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchResponse:
    id: str
    status: int
    body: Any
    error: GraphError | None = None


@dataclass(frozen=True)
class DeltaPage:
    """One page of a calendarView delta round."""

    items: list[dict[str, Any]]  # in Graph's order: full events, or {"id", "@removed"}
    next_link: str | None  # more pages in this round
    delta_link: str | None  # set on the last page: where the next round starts

    @property
    def changed(self) -> list[dict[str, Any]]:
        return [i for i in self.items if "@removed" not in i]

    @property
    def removed(self) -> list[str]:
        return [str(i["id"]) for i in self.items if "@removed" in i]


class GraphClient:
    def __init__(
        self,
        settings: Settings,
        tokens: TokenProvider,
        session: requests.Session,
        *,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        page_size: int = 100,
        slots: MailboxSlots | None = None,
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.session = session
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self.page_size = page_size
        self.base = f"{settings.graph_endpoint}/{API_VERSION}"
        self.slots = slots or LocalSlots()
        self._sent = itertools.count(1)
        self.requests_sent = 0  # for benchmarks: HTTP requests actually sent to Graph

    @classmethod
    def from_settings(
        cls, settings: Settings, credential: CredentialSource, slots: MailboxSlots | None = None
    ) -> GraphClient:
        """A client with a session of its own, signing in with ``credential``: the source
        ``CREDENTIAL_MODE`` asks for (:func:`sync_core.credentials.sources.source_for`).
        ``slots`` keep the per-mailbox limit (this process's alone if not given)."""
        session = new_session()
        return cls(settings, TokenProvider(settings, credential, session), session, slots=slots)

    # -- transport ------------------------------------------------------------------------------

    def _mailbox_slot(self, mailbox: str | None) -> AbstractContextManager[None]:
        return nullcontext() if mailbox is None else self.slots.hold(mailbox)

    def _url(self, path: str) -> str:
        if path.startswith(("https://", "http://")):
            # nextLink / deltaLink: only ever follow links back to the configured Graph root,
            # so the token is never sent anywhere else.
            if not path.startswith(self.settings.graph_endpoint + "/"):
                raise GraphError(
                    kind=ErrorKind.UNEXPECTED,
                    code="ForeignLink",
                    detail="link outside GRAPH_ENDPOINT",
                )
            return path
        return self.base + path

    def _headers(
        self, token: str, page_size: int | None, extra: Mapping[str, str] | None
    ) -> dict[str, str]:
        prefer = ['IdType="ImmutableId"', 'outlook.timezone="UTC"']
        if page_size:
            prefer.append(f"odata.maxpagesize={page_size}")
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "Prefer": ", ".join(prefer),
            "client-request-id": str(uuid.uuid4()),
        }
        headers.update(extra or {})
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        mailbox: str | None = None,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        page_size: int | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Send one Graph request under the retry policy; the parsed JSON body (None if empty).

        ``idempotent`` (default: true except for POST) allows retrying after a connection error,
        where the request may or may not have reached Graph.
        """
        url = self._url(path)
        safe_to_resend = idempotent if idempotent is not None else method.upper() != "POST"
        attempt, waited, refreshed = 0, 0.0, False
        while True:
            attempt += 1
            token = self.tokens.token()
            try:
                with (
                    self._mailbox_slot(mailbox),
                    telemetry.graph_request(method, url, attempt - 1) as span,
                ):
                    self.requests_sent = next(self._sent)
                    response = self.session.request(
                        method,
                        url,
                        params=params,
                        json=json,
                        headers=self._headers(token, page_size, headers),
                        timeout=TIMEOUT,
                    )
                    span.answered(response.status_code)
            except requests.RequestException as exc:
                error = GraphError(
                    kind=ErrorKind.NETWORK,
                    code=type(exc).__name__,
                    detail=str(exc),
                    mailbox=mailbox,
                )
                delay = self.policy.wait_before(attempt, None, waited) if safe_to_resend else None
                if delay is None:
                    raise error from exc
                log.info("graph %s %s: %s; retrying in %.2fs", method, path[:80], error.code, delay)
                self.sleep(delay)
                waited += delay
                continue

            if response.status_code < 300:
                if response.status_code == 204 or not response.content:
                    return None
                return response.json()

            if response.status_code == 401 and not refreshed:
                refreshed = True  # the token may have been revoked or rotated: one fresh try
                self.tokens.token(force_refresh=True)
                continue

            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            error = error_from_response(
                response.status_code,
                _json_or_none(response),
                mailbox=mailbox,
                retry_after=retry_after,
                request_id=response.headers.get("request-id"),
            )
            if response.status_code in RETRY_STATUSES:
                delay = self.policy.wait_before(attempt, retry_after, waited)
                if delay is not None:
                    log.info(
                        "graph %s %s: %s %s; retrying in %.2fs",
                        method,
                        path[:80],
                        response.status_code,
                        error.code,
                        delay,
                    )
                    self.sleep(delay)
                    waited += delay
                    continue
            raise error

    def items(
        self,
        path: str,
        *,
        mailbox: str | None = None,
        params: Mapping[str, str] | None = None,
        page_size: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every item of a collection, page by page, following ``@odata.nextLink``."""
        body = self.request("GET", path, mailbox=mailbox, params=params, page_size=page_size)
        while True:
            yield from body.get("value", [])
            next_link = body.get("@odata.nextLink")
            if not next_link:
                return
            body = self.request("GET", next_link, mailbox=mailbox, page_size=page_size)

    def batch(self, requests_: Sequence[BatchRequest]) -> list[BatchResponse]:
        """Run requests through ``$batch``, 20 a call and a few calls at once; throttled ones
        wait their own Retry-After."""
        results: dict[str, BatchResponse] = {}
        pending = list(requests_)
        attempt, waited = 0, 0.0
        while pending:
            attempt += 1
            chunks = [pending[i : i + MAX_BATCH] for i in range(0, len(pending), MAX_BATCH)]
            if len(chunks) == 1:
                answers = [self._batch_call(chunks[0])]
            else:
                with ThreadPoolExecutor(BATCH_CONCURRENCY, "graph-batch") as pool:
                    answers = list(pool.map(self._batch_call, chunks))
            retry: list[BatchRequest] = []
            longest_wait = 0.0
            for answer in answers:
                for response, original in answer:
                    results[original.id] = response
                    if response.error is not None and response.status in RETRY_STATUSES:
                        retry.append(original)
                        wait = response.error.retry_after or self.policy.backoff(attempt)
                        longest_wait = max(longest_wait, wait)
            if not retry:
                break
            delay = self.policy.wait_before(attempt, longest_wait, waited)
            if delay is None:
                break  # the throttled ones keep their errors; the caller retries them later
            self.sleep(delay)
            waited += delay
            pending = retry
        return [results[r.id] for r in requests_ if r.id in results]

    def _batch_call(self, chunk: list[BatchRequest]) -> list[tuple[BatchResponse, BatchRequest]]:
        """One ``$batch`` request: each inner answer with the request it answers."""
        answer = self.request(
            "POST",
            "/$batch",
            json={"requests": [_batch_item(r) for r in chunk]},
            idempotent=all(r.method.upper() != "POST" for r in chunk),
        )
        by_id = {r.id: r for r in chunk}
        answered = []
        for item in answer.get("responses", []):
            original = by_id.get(str(item.get("id")))
            if original is None:
                continue
            status = int(item.get("status", 500))
            body = item.get("body")
            error = None
            if status >= 300:
                headers = {k.lower(): v for k, v in (item.get("headers") or {}).items()}
                error = error_from_response(
                    status,
                    body,
                    mailbox=original.mailbox,
                    retry_after=parse_retry_after(headers.get("retry-after")),
                )
            answered.append((BatchResponse(original.id, status, body, error), original))
        return answered

    # -- users and rooms ------------------------------------------------------------------------

    def get_user(self, address: str) -> dict[str, Any]:
        return dict(
            self.request(
                "GET",
                user_path(address),
                mailbox=address,
                params={"$select": "id,displayName,mail,userPrincipalName"},
            )
        )

    def check_mailbox(self, address: str) -> dict[str, Any]:
        """Read the mailbox's calendar: proves it exists, is in Exchange Online and is in scope."""
        return dict(
            self.request(
                "GET",
                f"{user_path(address)}/calendar",
                mailbox=address,
                params={"$select": "id,name,allowedOnlineMeetingProviders"},
            )
        )

    def rooms(self) -> Iterator[dict[str, Any]]:
        return self.places("/places/microsoft.graph.room")

    def room_lists(self) -> Iterator[dict[str, Any]]:
        return self.places("/places/microsoft.graph.roomlist")

    def rooms_in(self, room_list: str) -> Iterator[dict[str, Any]]:
        return self.places(f"/places/{quote(room_list, safe='@')}/microsoft.graph.roomlist/rooms")

    def places(self, path: str, top: int = PLACES_PAGE) -> Iterator[dict[str, Any]]:
        """Every place of a places collection: by ``@odata.nextLink`` where Graph gives one, else
        by ``$top``/``$skip`` until a short page.

        The places API has been reported to leave out ``@odata.nextLink`` (microsoft-graph-docs
        #341, #6427); a page of places already seen ends the read too.
        """
        seen: set[str] = set()
        skip = 0
        body = self.request("GET", path, params={"$top": str(top), "$skip": "0"})
        while True:
            page = [p for p in body.get("value", []) if str(p.get("id")) not in seen]
            seen.update(str(p.get("id")) for p in page)
            yield from page
            skip += len(body.get("value", []))
            next_link = body.get("@odata.nextLink")
            if next_link and page:
                body = self.request("GET", next_link)
                continue
            if len(body.get("value", [])) < top or not page:
                return
            body = self.request("GET", path, params={"$top": str(top), "$skip": str(skip)})

    # -- events ---------------------------------------------------------------------------------

    def create_event(self, mailbox: str, event: Mapping[str, Any]) -> dict[str, Any]:
        """Create an event. Safe to resend only when ``event`` carries a ``transactionId``."""
        return dict(
            self.request(
                "POST",
                f"{user_path(mailbox)}/calendar/events",
                mailbox=mailbox,
                json=dict(event),
                idempotent="transactionId" in event,
            )
        )

    def get_event(
        self, mailbox: str, event_id: str, *, expand_property: str | None = None
    ) -> dict[str, Any]:
        params = (
            {"$expand": f"singleValueExtendedProperties($filter=id eq '{expand_property}')"}
            if expand_property
            else None
        )
        return dict(
            self.request(
                "GET",
                event_path(mailbox, event_id),
                mailbox=mailbox,
                params=params,
            )
        )

    def update_event(
        self, mailbox: str, event_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        return dict(
            self.request(
                "PATCH",
                event_path(mailbox, event_id),
                mailbox=mailbox,
                json=dict(changes),
            )
        )

    def delete_event(self, mailbox: str, event_id: str) -> bool:
        """Delete; False if it was already gone."""
        try:
            self.request("DELETE", event_path(mailbox, event_id), mailbox=mailbox)
        except GraphError as error:
            if error.kind is ErrorKind.ITEM_NOT_FOUND:
                return False
            raise
        return True

    def find_events_by_property(
        self, mailbox: str, property_id: str, value: str
    ) -> list[dict[str, Any]]:
        """Events whose single-value extended property has this value (ours: the booking id)."""
        # Graph's OData string literal: a quote inside is doubled.
        literal = value.replace("'", "''")
        return list(
            self.items(
                f"{user_path(mailbox)}/calendar/events",
                mailbox=mailbox,
                params={
                    "$filter": (
                        f"singleValueExtendedProperties/Any(ep: ep/id eq '{property_id}' "
                        f"and ep/value eq '{literal}')"
                    ),
                    "$expand": f"singleValueExtendedProperties($filter=id eq '{property_id}')",
                },
            )
        )

    def calendar_view(
        self, mailbox: str, start: datetime, end: datetime
    ) -> Iterator[dict[str, Any]]:
        return self.items(
            f"{user_path(mailbox)}/calendarView",
            mailbox=mailbox,
            params={"startDateTime": iso(start), "endDateTime": iso(end)},
            page_size=self.page_size,
        )

    def calendar_delta(
        self,
        mailbox: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        link: str | None = None,
    ) -> Iterator[DeltaPage]:
        """A calendarView delta round: from ``link`` (a stored next/delta link) or a new window.

        Raises :class:`DeltaReset` when Graph no longer knows the round (410 / syncStateNotFound):
        the caller starts a new round with a full read.
        """
        if link is None:
            if start is None or end is None:
                raise ValueError("a new delta round needs its window (start and end)")
            body = self.request(
                "GET",
                f"{user_path(mailbox)}/calendarView/delta",
                mailbox=mailbox,
                params={"startDateTime": iso(start), "endDateTime": iso(end)},
                page_size=self.page_size,
            )
        else:
            body = self.request("GET", link, mailbox=mailbox, page_size=self.page_size)
        while True:
            next_link = body.get("@odata.nextLink")
            yield DeltaPage(list(body.get("value", [])), next_link, body.get("@odata.deltaLink"))
            if not next_link:
                return
            body = self.request("GET", next_link, mailbox=mailbox, page_size=self.page_size)

    def get_schedule(
        self,
        mailbox: str,
        schedules: Sequence[str],
        start: datetime,
        end: datetime,
        interval: int = 30,
    ) -> list[dict[str, Any]]:
        body = self.request(
            "POST",
            f"{user_path(mailbox)}/calendar/getSchedule",
            mailbox=mailbox,
            json={
                "schedules": list(schedules),
                "startTime": {"dateTime": iso(start)[:-1], "timeZone": "UTC"},
                "endTime": {"dateTime": iso(end)[:-1], "timeZone": "UTC"},
                "availabilityViewInterval": interval,
            },
            idempotent=True,
        )
        return list(body.get("value", []))

    # -- subscriptions --------------------------------------------------------------------------

    def create_subscription(
        self,
        *,
        resource: str,
        change_type: str,
        notification_url: str,
        lifecycle_url: str,
        expiration: datetime,
        client_state: str,
    ) -> dict[str, Any]:
        return dict(
            self.request(
                "POST",
                "/subscriptions",
                json={
                    "changeType": change_type,
                    "notificationUrl": notification_url,
                    "lifecycleNotificationUrl": lifecycle_url,
                    "resource": resource,
                    "expirationDateTime": iso(expiration),
                    "clientState": client_state,
                    "latestSupportedTlsVersion": "v1_2",
                },
            )
        )

    def renew_subscription(self, subscription_id: str, expiration: datetime) -> dict[str, Any]:
        return dict(
            self.request(
                "PATCH",
                f"/subscriptions/{quote(subscription_id, safe='')}",
                json={"expirationDateTime": iso(expiration)},
            )
        )

    def reauthorize_subscription(self, subscription_id: str) -> None:
        self.request(
            "POST", f"/subscriptions/{quote(subscription_id, safe='')}/reauthorize", idempotent=True
        )

    def delete_subscription(self, subscription_id: str) -> bool:
        try:
            self.request("DELETE", f"/subscriptions/{quote(subscription_id, safe='')}")
        except GraphError as error:
            if error.status == 404:
                return False
            raise
        return True

    def subscriptions(self) -> Iterator[dict[str, Any]]:
        return self.items("/subscriptions")

    # -- the app registration -------------------------------------------------------------------

    def get_application(self) -> dict[str, Any]:
        """This app's registration, with passwordCredentials and keyCredentials."""
        return dict(
            self.request(
                "GET",
                f"/applications(appId='{self.settings.client_id}')",
                params={"$select": "id,appId,displayName,passwordCredentials,keyCredentials"},
            )
        )

    def add_password(self, application_id: str, display_name: str, end: datetime) -> dict[str, Any]:
        return dict(
            self.request(
                "POST",
                f"/applications/{quote(application_id, safe='')}/addPassword",
                json={
                    "passwordCredential": {
                        "displayName": display_name,
                        "endDateTime": iso(end),
                    }
                },
            )
        )

    def remove_password(self, application_id: str, key_id: str) -> None:
        self.request(
            "POST",
            f"/applications/{quote(application_id, safe='')}/removePassword",
            json={"keyId": key_id},
            idempotent=True,
        )


def _batch_item(request: BatchRequest) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": request.id,
        "method": request.method.upper(),
        "url": request.url,
        "headers": {"Prefer": 'IdType="ImmutableId", outlook.timezone="UTC"', **request.headers},
    }
    if request.body is not None:
        item["body"] = request.body
        item["headers"].setdefault("Content-Type", "application/json")
    return item


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
