"""The admin console under ``/api/admin/ui``: the status page grown into pages and forms over
the same admin operations as the API and the CLI (rooms, mappings, resync, deactivate, purge,
doctor, history, bulk mapping by rule).

Server-rendered HTML without scripts: every change is a form that posts here and is answered
with a redirect to the page that shows its outcome (or the form again, with what to fix).
Same auth as the admin API (a function key: header, or ``?code=`` which every link and form
carries on). Every form carries a CSRF token that must equal the console's cookie (set
``SameSite=Strict``, ``HttpOnly``; a double-submit token needs no server state, so it holds
across instances), and a cross-site ``Origin`` is refused. Every value is escaped.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from sync_core.admin import bulk
from sync_core.admin import doctor as doctor_
from sync_core.admin import mappings as admin
from sync_core.admin import rooms as rooms_
from sync_core.admin import status as status_
from sync_core.admin.page import PAGE_HEADERS, e, layout, render, scroller
from sync_core.admin.problems import GraphProblem
from sync_core.admin.purge import remove_mapping
from sync_core.admin.resync import resync
from sync_core.clock import ago, now
from sync_core.graph import GraphError
from sync_core.problems import NotFound, Problem
from sync_core.web import Request, Response

if TYPE_CHECKING:
    from sync_core.services import Services
    from sync_core.store.mappings import Mapping

UI = "/api/admin/ui"
CSRF_FIELD = "csrf"
HISTORY_ON_PAGE = 20
PAGES = (("", "Status"), ("/rooms", "Rooms"), ("/bulk", "Map by rule"), ("/doctor", "Doctor"))
DIRECTIONS = {
    "both": "Both ways: bookings to Outlook, Outlook events back as blockers",
    "to_outlook": "To Outlook only: bookings are written, no blockers come back",
    "from_outlook": "From Outlook only: blockers only (read-only calendar access is enough)",
}
PRIVACY = {
    "busy_only": "Busy only: blockers carry no titles",
    "full": "Full: blockers carry titles (never of private events)",
}
DONE = {  # what a redirect after a change says on the page it lands on
    "created": "The mapping is saved and sync has started.",
    "updated": "The mapping is saved.",
    "resynced": "A fresh round in both directions is queued.",
    "deactivated": "Sync stopped in both directions; every entry is kept.",
    "enabled": "Sync started again; bookings changed meanwhile are applied again.",
    "purged": "The mapping is removed, its events deleted and its blockers withdrawn.",
}


class CsrfRefused(Problem):
    status, title, slug = 403, "The form was not accepted", "csrf"


@dataclass
class Page:
    """One request to the console: its Services, the request, and how links are made."""

    svc: Services
    request: Request
    token: str = ""
    new_token: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def code(self) -> str | None:
        return self.request.query.get("code") or None

    def url(self, path: str = "", **params: str | None) -> str:
        """A console URL, carrying the function key on when it came in the query."""
        query = {k: v for k, v in params.items() if v is not None}
        if self.code:
            query["code"] = self.code
        return UI + path + ("?" + urlencode(query) if query else "")

    def mapping_url(self, resource_id: str) -> str:
        return self.url("/mapping", resource=resource_id)

    def form(self, path: str, inner: str, *, method: str = "post", label: str = "") -> str:
        aria = f' aria-label="{e(label)}"' if label else ""
        hidden = (
            f'<input type="hidden" name="{CSRF_FIELD}" value="{e(self.token)}">'
            if method == "post"
            else ""
        )
        return f'<form method="{method}" action="{e(self.url(path))}"{aria}>{hidden}{inner}</form>'

    def nav(self, current: str | None) -> str:
        links = "".join(
            f'<a href="{e(self.url(path))}"'
            + (' aria-current="page"' if path == current else "")
            + f">{e(title)}</a>"
            for path, title in PAGES
        )
        return f'<nav aria-label="Console">{links}</nav>'

    def html(self, title: str, current: str | None, body: str, status: int = 200) -> Response:
        document = layout(title, body, nav=self.nav(current))
        return Response(status, document.encode("utf-8"), {**PAGE_HEADERS, **self.headers})

    def redirect(self, location: str) -> Response:
        return Response(303, b"", {"Location": location, **self.headers})


# -- CSRF -----------------------------------------------------------------------------------------


def _secure(request: Request) -> bool:
    return urlsplit(request.url).scheme == "https"


def cookie_name(request: Request) -> str:
    # __Host-: only ever set by this host, over HTTPS, for the whole site (not on plain HTTP).
    return "__Host-console-csrf" if _secure(request) else "console-csrf"


def _cookie_token(request: Request) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(request.header("cookie") or "")
    except Exception:  # a malformed Cookie header: as if there were none
        return None
    morsel = jar.get(cookie_name(request))
    return morsel.value if morsel is not None and len(morsel.value) >= 32 else None


def _start(svc: Services, request: Request) -> Page:
    page = Page(svc, request)
    token = _cookie_token(request)
    if token is None:
        token = secrets.token_urlsafe(32)
        attributes = "; Path=/; HttpOnly; SameSite=Strict" + (
            "; Secure" if _secure(request) else ""
        )
        page.headers["Set-Cookie"] = f"{cookie_name(request)}={token}{attributes}"
    page.token = token
    return page


def _form(page: Page) -> dict[str, str]:
    """The posted form, once its CSRF token and origin were checked."""
    origin = page.request.header("origin")
    if origin and origin != "null":
        mine = urlsplit(page.request.url)
        theirs = urlsplit(origin)
        # Behind a proxy (Front Door, App Gateway) the browser's host is the forwarded one.
        hosts = {mine.netloc, page.request.header("x-forwarded-host") or mine.netloc}
        if theirs.netloc not in hosts or theirs.scheme not in ("https", mine.scheme):
            raise CsrfRefused(f"the form came from another site ({origin})")
    try:
        fields = parse_qs(page.request.body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise CsrfRefused("the form is not UTF-8") from None
    form = {name: values[-1] for name, values in fields.items()}
    cookie = _cookie_token(page.request)
    sent = form.get(CSRF_FIELD, "")
    if cookie is None or not hmac.compare_digest(cookie.encode(), sent.encode()):
        raise CsrfRefused(
            "the form has expired or did not come from this console; reload the page and try again"
        )
    return form


# -- entry point ----------------------------------------------------------------------------------


def handle(svc: Services, request: Request) -> Response:
    """``/api/admin/ui`` and ``/api/admin/ui/{*path}``, GET and POST."""
    page = _start(svc, request)
    path = "/" + (request.route.get("path") or "").strip("/")
    path = "" if path == "/" else path
    route = ROUTES.get((request.method.upper(), path))
    if route is None:
        return page.html("Not found", None, _notice("error", "There is no such page."), 404)
    try:
        return route(page)
    except CsrfRefused as refused:
        return page.html("Not accepted", None, _notice("error", refused.detail), 403)
    except NotFound as missing:
        return page.html("Not found", None, _notice("error", missing.detail), 404)


def _notice(tone: str, text: str, hint: str = "") -> str:
    extra = f'<div class="hint"><b>What to do:</b> {e(hint)}</div>' if hint else ""
    role = "alert" if tone == "error" else "status"
    return f'<div class="notice {e(tone)}" role="{role}">{e(text)}{extra}</div>'


def _done(page: Page) -> str:
    said = DONE.get(page.request.query.get("done") or "")
    return _notice("ok", said) if said else ""


# -- status ---------------------------------------------------------------------------------------


def status_page(page: Page) -> Response:
    document = status_.build_status(page.svc)
    recent, _ = page.svc.history.page(page_size=15)
    html = render(
        document, recent, nav=page.nav(""), resource_link=page.mapping_url, notice=_done(page)
    )
    return Response(200, html.encode("utf-8"), {**PAGE_HEADERS, **page.headers})


# -- rooms ----------------------------------------------------------------------------------------


def rooms_page(page: Page) -> Response:
    try:
        report = rooms_.list_rooms(page.svc)
    except Problem as problem:
        hint = getattr(problem, "hint", "") or ""
        body = _notice("error", problem.detail, hint)
        return page.html("Rooms", "/rooms", body, problem.status)
    mapped: dict[str, list[Mapping]] = {}
    for mapping in page.svc.mappings.all():
        mapped.setdefault(mapping.mailbox, []).append(mapping)
    rows = []
    for room in report.rooms:
        holders = mapped.get(room.address, [])
        links = ", ".join(
            f'<a href="{e(page.mapping_url(m.resource_id))}">{e(m.resource_id)}</a>'
            for m in sorted(holders, key=lambda m: m.resource_id)
        )
        lists = ", ".join(room.room_lists) or "—"
        action = (
            f'<a href="{e(page.url("/mapping", mailbox=room.address))}">'
            f'Map a resource<span class="visually-hidden"> to {e(room.display_name)}</span></a>'
        )
        rows.append(
            f'<tr data-room="{e(room.address)}"><td>{e(room.display_name)}'
            f'<div class="muted">{e(room.address)}</div></td><td class="wide-only">{e(lists)}</td>'
            f'<td class="num wide-only">'
            f"{e(room.capacity if room.capacity is not None else '—')}</td>"
            f"<td>{links or '<span class=muted>not mapped</span>'}</td><td>{action}</td></tr>"
        )
    lists_html = "".join(
        f"<li>{e(rl.get('display_name') or rl.get('address'))} "
        f'<span class="muted">{e(rl.get("address"))}</span></li>'
        for rl in report.room_lists
    )
    body = (
        f"{_done(page)}<p>The rooms and room lists of the Microsoft 365 tenant, and the "
        "resources mapped to each. Map a room to a resource of the booking platform, or map a "
        f'whole room list at once under <a href="{e(page.url("/bulk"))}">Map by rule</a>.</p>'
        f'<h2 id="rooms-title">Rooms</h2>{scroller("rooms-title")}'
        '<table id="rooms" aria-labelledby="rooms-title"><thead><tr><th>Room</th>'
        '<th class="wide-only">Room lists</th><th class="wide-only">Capacity</th>'
        "<th>Mapped to</th><th>Action</th></tr></thead>"
        f"<tbody>{''.join(rows) or _empty(5, 'The tenant has no rooms.')}</tbody></table></div>"
        f'<h2>Room lists</h2><ul id="room-lists">{lists_html or "<li>None.</li>"}</ul>'
    )
    return page.html("Rooms", "/rooms", body)


def _empty(columns: int, text: str) -> str:
    return f'<tr><td colspan="{columns}" class="muted">{e(text)}</td></tr>'


# -- one mapping ----------------------------------------------------------------------------------


@dataclass
class MappingForm:
    resource_id: str = ""
    mailbox: str = ""
    privacy: str = "busy_only"
    direction: str = "both"
    enabled: bool = True
    ignore_all_day: bool = False
    ignore_title_pattern: str = ""
    ignore_declined: bool = False

    @classmethod
    def of(cls, mapping: Mapping) -> MappingForm:
        return cls(
            mapping.resource_id,
            mapping.mailbox,
            mapping.privacy,
            mapping.direction,
            mapping.enabled,
            mapping.filters.ignore_all_day,
            mapping.filters.ignore_title_pattern or "",
            mapping.filters.ignore_declined,
        )

    @classmethod
    def posted(cls, form: dict[str, str]) -> MappingForm:
        return cls(
            form.get("resource_id", "").strip(),
            form.get("mailbox", "").strip(),
            form.get("privacy", "busy_only"),
            form.get("direction", "both"),
            form.get("enabled") == "on",
            form.get("ignore_all_day") == "on",
            form.get("ignore_title_pattern", ""),
            form.get("ignore_declined") == "on",
        )

    def body(self) -> dict[str, Any]:
        """The PUT body it stands for (validated by the same model as the API)."""
        return {
            "mailbox": self.mailbox,
            "privacy": self.privacy,
            "direction": self.direction,
            "enabled": self.enabled,
            "filters": {
                "ignore_all_day": self.ignore_all_day,
                "ignore_title_pattern": self.ignore_title_pattern or None,
                "ignore_declined": self.ignore_declined,
            },
        }


def _select(name: str, label: str, options: dict[str, str], chosen: str) -> str:
    items = "".join(
        f'<option value="{e(value)}"{" selected" if value == chosen else ""}>{e(text)}</option>'
        for value, text in options.items()
    )
    return (
        f'<div class="field"><label for="{name}">{e(label)}</label>'
        f'<select id="{name}" name="{name}">{items}</select></div>'
    )


def _checkbox(name: str, label: str, checked: bool) -> str:
    return (
        f'<div class="check"><input type="checkbox" id="{name}" name="{name}"'
        f'{" checked" if checked else ""}><label for="{name}">{e(label)}</label></div>'
    )


def _mapping_form(page: Page, values: MappingForm, existing: bool, etag: str = "") -> str:
    # The ETag read with the form: saving over a change someone made meanwhile is refused.
    resource = (
        f'<input type="hidden" name="resource_id" value="{e(values.resource_id)}">'
        f'<input type="hidden" name="etag" value="{e(etag)}">'
        if existing
        else '<div class="field"><label for="resource_id">Resource id</label>'
        f'<input type="text" id="resource_id" name="resource_id" required maxlength="256" '
        f'value="{e(values.resource_id)}" aria-describedby="resource-help">'
        '<div class="help" id="resource-help">The id of the room, desk or person in the '
        "booking platform.</div></div>"
    )
    inner = (
        f"{resource}"
        '<div class="field"><label for="mailbox">Microsoft 365 mailbox</label>'
        f'<input type="email" id="mailbox" name="mailbox" required maxlength="320" '
        f'value="{e(values.mailbox)}" aria-describedby="mailbox-help">'
        '<div class="help" id="mailbox-help">The room or person\'s address; several resources '
        "may share one.</div></div>"
        f"{_select('privacy', 'Privacy', PRIVACY, values.privacy)}"
        f"{_select('direction', 'Direction', DIRECTIONS, values.direction)}"
        '<fieldset class="field"><legend>Outlook events that block nothing</legend>'
        f"{_checkbox('ignore_all_day', 'All-day events', values.ignore_all_day)}"
        f"{_checkbox('ignore_declined', 'Meetings the mailbox declined', values.ignore_declined)}"
        '<div class="field"><label for="ignore_title_pattern">Titles matching</label>'
        '<input type="text" id="ignore_title_pattern" name="ignore_title_pattern" '
        f'maxlength="200" value="{e(values.ignore_title_pattern)}" '
        'aria-describedby="pattern-help"><div class="help" id="pattern-help">A regular '
        "expression, case-insensitive, e.g. <code>^lunch</code>; empty: none.</div></div>"
        "</fieldset>"
        f"{_checkbox('enabled', 'Sync enabled', values.enabled)}"
        '<div class="actions">'
        '<button type="submit" name="action" value="check">Check mailbox</button>'
        '<button type="submit" name="action" value="save" class="primary">Save</button></div>'
    )
    return page.form("/mapping", inner, label="Mapping")


def mapping_page(page: Page, values: MappingForm | None = None, notice: str = "") -> Response:
    resource_id = page.request.query.get("resource") or (values.resource_id if values else "")
    mapping = page.svc.mappings.get(resource_id) if resource_id else None
    if resource_id and mapping is None and values is None and "resource" in page.request.query:
        raise NotFound(f"resource {resource_id!r} is not mapped")
    if values is None:
        values = (
            MappingForm.of(mapping)
            if mapping
            else MappingForm(mailbox=page.request.query.get("mailbox") or "")
        )
    existing = mapping is not None
    title = f"Mapping {resource_id}" if existing else "New mapping"
    parts = [_done(page), notice]
    if mapping is not None:
        parts.append(_mapping_state(page, mapping))
    parts.append(f"<h2>{'Settings' if existing else 'Map a resource'}</h2>")
    etag = mapping.etag or "" if mapping is not None else ""
    parts.append(_mapping_form(page, values, existing, etag))
    if mapping is not None:
        parts.append(_mapping_actions(page, mapping))
        parts.append(_mapping_history(page, mapping.resource_id))
    status = 422 if notice and "notice error" in notice else 200
    return page.html(title, None, "".join(parts), status)


def _mapping_state(page: Page, mapping: Mapping) -> str:
    health = page.svc.health.get(mapping.resource_id)
    state = "deactivated" if not mapping.enabled else health.state
    labels = {"ok": "In sync", "error": "Error", "deactivated": "Deactivated"}
    error = ""
    if state == "error" and health.last_error:
        error = _notice(
            "error",
            f"{health.last_error.get('code')}: {health.last_error.get('message')}",
            str(health.last_error.get("hint") or ""),
        )
    return (
        f'<section class="panel" id="mapping-state"><p><span class="badge {e(state)}">'
        f"{e(labels.get(state, state))}</span> {e(mapping.resource_id)} → "
        f"<b>{e(mapping.mailbox)}</b></p><p>Last success: "
        f"{e(ago(health.last_success, now()))}</p>"
        f"{error}</section>"
    )


def _mapping_actions(page: Page, mapping: Mapping) -> str:
    hidden = f'<input type="hidden" name="resource_id" value="{e(mapping.resource_id)}">'
    resync_form = page.form(
        "/mapping/resync",
        hidden + '<button type="submit">Resync now</button>',
        label="Resync",
    )
    toggle = "off" if mapping.enabled else "on"
    toggle_form = page.form(
        "/mapping/enable",
        hidden + f'<input type="hidden" name="enabled" value="{toggle}">'
        f'<button type="submit">{"Deactivate" if mapping.enabled else "Enable again"}</button>',
        label="Deactivate" if mapping.enabled else "Enable",
    )
    purge = (
        f'<a href="{e(page.url("/mapping/purge", resource=mapping.resource_id))}">'
        "Remove and purge…</a>"
    )
    return (
        '<h2>Actions</h2><div class="actions" id="actions">'
        f"{resync_form if mapping.enabled else ''}{toggle_form}{purge}</div>"
        '<p class="muted">Deactivating stops sync in both directions and keeps every entry. '
        "Purging deletes the events this service wrote and withdraws the blockers.</p>"
    )


def _mapping_history(page: Page, resource_id: str) -> str:
    entries, _ = page.svc.history.page(resource_id=resource_id, page_size=HISTORY_ON_PAGE)
    moment = now()
    rows = "".join(
        f"<tr><td>{e(ago(entry.at, moment))}</td><td>{e(entry.action)}</td>"
        f"<td>{e(entry.subject)}</td>"
        f'<td class="outcome {e(entry.outcome)}">{e(entry.outcome)}</td><td>{e(entry.detail)}'
        + (
            f'<div class="hint"><b>What to do:</b> {e(entry.error.get("hint"))}</div>'
            if entry.error
            else ""
        )
        + "</td></tr>"
        for entry in entries
    )
    return (
        f'<h2 id="history-title">History</h2>{scroller("history-title")}'
        '<table id="history" aria-labelledby="history-title"><thead><tr><th>When</th>'
        "<th>What</th><th>Subject</th><th>Outcome</th><th>Detail</th></tr></thead>"
        f"<tbody>{rows or _empty(5, 'Nothing has happened yet.')}</tbody></table></div>"
    )


def save_mapping(page: Page) -> Response:
    form = _form(page)
    values = MappingForm.posted(form)
    if not values.resource_id:
        return mapping_page(page, values, _notice("error", "Give the resource id."))
    if form.get("action") == "check":
        return mapping_page(page, values, _check(page, values))
    try:
        result = admin.save_mapping(
            page.svc, values.resource_id, values.body(), if_match=form.get("etag") or None
        )
    except Problem as problem:
        return mapping_page(page, values, _problem_notice(problem))
    done = "created" if result.created else "updated"
    if not result.created and result.previous is not None:
        if result.previous.enabled and not result.mapping.enabled:
            done = "deactivated"
        elif not result.previous.enabled and result.mapping.enabled:
            done = "enabled"
    return page.redirect(page.url("/mapping", resource=result.mapping.resource_id, done=done))


def _check(page: Page, values: MappingForm) -> str:
    """The mailbox check a save would make, without saving: its outcome and hint."""
    try:
        page.svc.graph.check_mailbox(values.mailbox.lower())
    except GraphError as error:
        return _notice("error", f"{values.mailbox}: {error.message}", error.hint)
    except Exception:  # an address Graph cannot even be asked about
        return _notice("error", f"{values.mailbox} could not be checked")
    return _notice("ok", f"{values.mailbox} is reachable: its calendar can be used.")


def _problem_notice(problem: Problem) -> str:
    hint = problem.hint if isinstance(problem, GraphProblem) else ""
    fields = "; ".join(f"{f.field}: {f.message}" for f in problem.errors)
    text = f"Not saved: {problem.detail}" + (
        f" ({fields})" if fields and fields not in problem.detail else ""
    )
    return _notice("error", text, hint)


def _posted_mapping(page: Page) -> tuple[dict[str, str], Mapping]:
    form = _form(page)
    resource_id = form.get("resource_id", "")
    mapping = page.svc.mappings.get(resource_id) if resource_id else None
    if mapping is None:
        raise NotFound(f"resource {resource_id!r} is not mapped")
    return form, mapping


def resync_mapping(page: Page) -> Response:
    _, mapping = _posted_mapping(page)
    try:
        resync(page.svc, mapping.resource_id)
    except Problem as problem:
        page.request = _with_query(page.request, resource=mapping.resource_id)
        return mapping_page(page, notice=_problem_notice(problem))
    return page.redirect(page.url("/mapping", resource=mapping.resource_id, done="resynced"))


def enable_mapping(page: Page) -> Response:
    form, mapping = _posted_mapping(page)
    values = MappingForm.of(mapping)
    values.enabled = form.get("enabled") == "on"
    try:
        admin.save_mapping(page.svc, mapping.resource_id, values.body())
    except Problem as problem:
        page.request = _with_query(page.request, resource=mapping.resource_id)
        return mapping_page(page, notice=_problem_notice(problem))
    done = "enabled" if values.enabled else "deactivated"
    return page.redirect(page.url("/mapping", resource=mapping.resource_id, done=done))


def _with_query(request: Request, **params: str) -> Request:
    return replace(request, query={**request.query, **params})


def purge_page(page: Page, notice: str = "") -> Response:
    resource_id = page.request.query.get("resource") or ""
    mapping = page.svc.mappings.get(resource_id) if resource_id else None
    if mapping is None:
        raise NotFound(f"resource {resource_id!r} is not mapped")
    events = [link for link in page.svc.links.for_resource(resource_id) if link.state != "removed"]
    blockers = page.svc.blockers.for_resource(mapping.mailbox, resource_id)
    inner = (
        f'<input type="hidden" name="resource_id" value="{e(resource_id)}">'
        f"{_checkbox('confirm', f'Yes, remove {resource_id} and delete these', False)}"
        '<div class="actions"><button type="submit" class="danger">Remove and purge</button>'
        f'<a href="{e(page.mapping_url(resource_id))}">Cancel</a></div>'
    )
    body = (
        f'<section class="panel" id="purge-summary"><p>Removing <b>{e(resource_id)}</b> '
        "with purge:</p><ul>"
        f'<li>deletes <b id="purge-events">{len(events)}</b> event(s) this service wrote into '
        f"<b>{e(mapping.mailbox)}</b> for the resource's bookings;</li>"
        f'<li>withdraws <b id="purge-blockers">{len(blockers)}</b> blocker(s) from the booking '
        "platform;</li><li>removes the mapping and its subscription.</li></ul>"
        "<p>Events people created in Outlook are not touched. This cannot be undone.</p>"
        f"</section>{page.form('/mapping/purge', inner, label='Confirm purge')}"
    )
    return page.html(f"Purge {resource_id}", None, notice + body, 422 if notice else 200)


def purge_mapping(page: Page) -> Response:
    form, mapping = _posted_mapping(page)
    if form.get("confirm") != "on":
        page.request = _with_query(page.request, resource=mapping.resource_id)
        return purge_page(page, _notice("error", "Tick the box to confirm the purge."))
    try:
        remove_mapping(page.svc, mapping.resource_id, purge=True)
    except Problem as problem:
        page.request = _with_query(page.request, resource=mapping.resource_id)
        return mapping_page(page, notice=_problem_notice(problem))
    return page.redirect(page.url("", done="purged"))


# -- doctor ---------------------------------------------------------------------------------------


def doctor_page(page: Page) -> Response:
    report = doctor_.run_doctor(page.svc)
    verdict = {"pass": "Passed", "warn": "Warning", "fail": "Failed"}
    rows = "".join(
        f'<tr class="check {e(c["status"])}"><td><span class="check-{e(c["status"])}">'
        f"{e(verdict.get(c['status'], c['status']))}</span></td><td>{e(c['name'])}</td>"
        f"<td>{e(c['message'])}"
        + (
            f'<div class="hint"><b>What to do:</b> {e(c["hint"])}</div>'
            if c.get("hint") and c["status"] != "pass"
            else ""
        )
        + "</td></tr>"
        for c in report["checks"]
    )
    overall = {"pass": "ok", "warn": "warning", "fail": "error"}[report["result"]]
    said = {
        "ok": "Every check passed.",
        "warning": "It works; some checks want attention.",
        "error": "Some checks failed: see what to do below.",
    }[overall]
    body = (
        f'<div class="banner {overall}" id="overall">{e(said)}</div>'
        f'<h2 id="checks-title">Checks</h2>{scroller("checks-title")}'
        '<table id="checks" aria-labelledby="checks-title"><thead><tr><th>Result</th>'
        f"<th>Check</th><th>Finding</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )
    return page.html("Doctor", "/doctor", body)


# -- bulk -----------------------------------------------------------------------------------------


def bulk_page(page: Page, values: dict[str, str] | None = None, result: str = "") -> Response:
    values = values or {"template": "room-{local}", "privacy": "busy_only", "direction": "both"}
    try:
        room_lists = rooms_.list_rooms(page.svc).room_lists
    except Problem:
        room_lists = []
    options = '<option value="">(listed mailboxes below)</option>' + "".join(
        f'<option value="{e(rl.get("address"))}"'
        + (" selected" if rl.get("address") == values.get("room_list") else "")
        + f">{e(rl.get('display_name') or rl.get('address'))}</option>"
        for rl in room_lists
    )
    inner = (
        '<div class="field"><label for="room_list">Room list</label>'
        f'<select id="room_list" name="room_list">{options}</select></div>'
        '<div class="field"><label for="mailboxes">Or mailboxes, one a line</label>'
        f'<textarea id="mailboxes" name="mailboxes">{e(values.get("mailboxes", ""))}</textarea>'
        "</div>"
        '<div class="field"><label for="template">Resource id template</label>'
        f'<input type="text" id="template" name="template" required '
        f'value="{e(values.get("template", ""))}" aria-describedby="template-help">'
        '<div class="help" id="template-help"><code>{local}</code>: the address before the @; '
        "<code>{address}</code>: all of it.</div></div>"
        f"{_select('privacy', 'Privacy', PRIVACY, values.get('privacy', 'busy_only'))}"
        f"{_select('direction', 'Direction', DIRECTIONS, values.get('direction', 'both'))}"
        '<div class="actions">'
        '<button type="submit" name="action" value="preview">Preview (changes nothing)</button>'
        '<button type="submit" name="action" value="apply" class="primary">Map them</button>'
        "</div>"
    )
    body = (
        "<p>Map every room of a room list, or a list of mailboxes, each to a resource id made "
        "from its address. Preview first: it checks every mailbox and saves nothing.</p>"
        f"{result}{page.form('/bulk', inner, label='Map by rule')}"
    )
    return page.html("Map by rule", "/bulk", body, 422 if "notice error" in result else 200)


def run_bulk(page: Page) -> Response:
    form = _form(page)
    rule: dict[str, Any] = {"resource_id_template": form.get("template", "")}
    mailboxes = [m.strip() for m in form.get("mailboxes", "").splitlines() if m.strip()]
    if form.get("room_list"):
        rule["room_list"] = form["room_list"]
    elif mailboxes:
        rule["mailboxes"] = mailboxes
    else:
        return bulk_page(page, form, _notice("error", "Choose a room list or list mailboxes."))
    rule["privacy"] = form.get("privacy", "busy_only")
    rule["direction"] = form.get("direction", "both")
    dry_run = form.get("action") != "apply"
    try:
        report = bulk.bulk_map(page.svc, {"rule": rule, "dry_run": dry_run})
    except Problem as problem:
        return bulk_page(page, form, _problem_notice(problem))
    would = "would be " if dry_run else ""
    counts = ", ".join(f"{n} {would}{status}" for status, n in report.counts().items() if n)
    heading = "Preview: nothing was saved" if dry_run else "Mapped"
    rows = "".join(
        f'<tr class="result {e(r.status)}"><td>{e(r.resource_id)}</td><td>{e(r.mailbox)}</td>'
        f"<td>{e(r.status)}</td><td>"
        + (
            f'{e(r.error.get("message"))}<div class="hint"><b>What to do:</b> '
            f"{e(r.error.get('hint'))}</div>"
            if r.error
            else ""
        )
        + "</td></tr>"
        for r in report.results
    )
    result = (
        f'<section class="panel" id="bulk-result"><h2 id="bulk-result-title">{e(heading)}</h2>'
        f"<p>{e(counts or 'nothing')}</p>{scroller('bulk-result-title')}"
        "<table><thead><tr><th>Resource</th><th>Mailbox</th>"
        f"<th>Result</th><th>Detail</th></tr></thead><tbody>{rows}</tbody></table></div></section>"
    )
    return bulk_page(page, form, result)


ROUTES: dict[tuple[str, str], Callable[[Page], Response]] = {
    ("GET", ""): status_page,
    ("GET", "/rooms"): rooms_page,
    ("GET", "/mapping"): mapping_page,
    ("POST", "/mapping"): save_mapping,
    ("POST", "/mapping/resync"): resync_mapping,
    ("POST", "/mapping/enable"): enable_mapping,
    ("GET", "/mapping/purge"): purge_page,
    ("POST", "/mapping/purge"): purge_mapping,
    ("GET", "/doctor"): doctor_page,
    ("GET", "/bulk"): bulk_page,
    ("POST", "/bulk"): run_bulk,
}
