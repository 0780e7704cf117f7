"""Events, calendarView, calendarView/delta, instances, calendar and getSchedule."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sandbox import calendar, delta, timeutil
from sandbox.calendar import Mailbox, StoredEvent
from sandbox.graph.core import PERMISSIONS, Ctx, GraphApi
from sandbox.messages import GraphError, Response, link
from sandbox.render import ViewOptions, date_time_zone, removed, render_event

USER = r"/users/(?P<user>[^/]+)"
# /users/{m}/events/{id} addresses the mailbox (Deleted Items too); /calendar/events/{id} the
# calendar only.
EVENTS = USER + r"(?P<calendar>/calendar)?/events"
EVENT = EVENTS + r"/(?P<event>[^/]+)"
VIEW = USER + r"(?:/calendar)?/calendarView"

AVAILABILITY = {"free": "0", "tentative": "1", "busy": "2", "oof": "3", "workingElsewhere": "4"}
AVAILABILITY_RANK = {"0": 0, "4": 1, "1": 2, "2": 3, "3": 4}


def actor(ctx: Ctx) -> str:
    return f"app:{ctx.app_id}"


def in_mailbox(ctx: Ctx) -> bool:
    """Whether an event route addresses the whole mailbox, so Deleted Items count."""
    return "calendar" not in ctx.params


def window(ctx: Ctx) -> tuple[datetime, datetime]:
    query = ctx.request.query
    if not query.get("startdatetime") or not query.get("enddatetime"):
        raise GraphError(
            400,
            "ErrorInvalidParameter",
            "This request requires a time window specified by the query string parameters "
            "StartDateTime and EndDateTime.",
        )
    try:
        start = timeutil.parse_instant(query["startdatetime"])
        end = timeutil.parse_instant(query["enddatetime"])
    except ValueError as error:
        raise GraphError(
            400, "ErrorInvalidParameter", "The value of StartDateTime or EndDateTime is invalid."
        ) from error
    if end < start:
        raise GraphError(
            400, "ErrorInvalidParameter", "The EndDateTime must not be before StartDateTime."
        )
    return start, end


def _expand(ctx: Ctx) -> set[str] | None:
    return calendar.parse_expand(ctx.request.query.get("$expand", ""))


def _filtered(ctx: Ctx, items: list[StoredEvent]) -> list[StoredEvent]:
    text = ctx.request.query.get("$filter")
    if not text:
        return items
    prop_id, value = calendar.parse_filter(text)
    return [ev for ev in items if calendar.matches_filter(ev, prop_id, value)]


def _page(
    ctx: Ctx,
    mailbox: Mailbox,
    items: list[StoredEvent],
    context: str,
    options: ViewOptions,
) -> Response:
    size = ctx.page_size(ctx.settings.calendar_page_size)
    offset = ctx.skip()
    chunk = items[offset : offset + size]
    body: dict[str, Any] = {"@odata.context": context}
    if offset + size < len(items):
        params = {k: v for k, v in _original_params(ctx).items() if k.lower() != "$skip"}
        params["$skip"] = str(offset + size)
        body["@odata.nextLink"] = link(ctx.origin, ctx.request.path, params)
    body["value"] = [render_event(ev, mailbox, options) for ev in chunk]
    return Response.json(200, body, ctx.preference_headers())


def _original_params(ctx: Ctx) -> dict[str, str]:
    from urllib.parse import parse_qsl

    params: dict[str, str] = {}
    for name, value in parse_qsl(ctx.request.raw_query, keep_blank_values=True):
        params.setdefault(name, value)
    return params


def register(api: GraphApi) -> None:
    tenant = api.tenant

    @api.route("GET", USER + r"/calendar", "calendar.read")
    def get_calendar(ctx: Ctx) -> Response:
        with tenant.lock:
            mailbox = ctx.mailbox()
            return Response.json(
                200,
                {
                    "@odata.context": ctx.user_context("calendar/$entity"),
                    "id": "AAMkCAL" + mailbox.id.replace("-", ""),
                    "name": "Calendar",
                    "color": "auto",
                    "hexColor": "",
                    "isDefaultCalendar": True,
                    "changeKey": "AAAAAAAAAA==",
                    "canShare": True,
                    "canViewPrivateItems": True,
                    "canEdit": True,
                    "allowedOnlineMeetingProviders": list(mailbox.meeting_providers),
                    "defaultOnlineMeetingProvider": mailbox.default_meeting_provider,
                    "isTallyingResponses": True,
                    "isRemovable": False,
                    "owner": {"name": mailbox.display_name, "address": mailbox.address},
                },
            )

    @api.route("POST", EVENTS, "calendar.write")
    def create_event(ctx: Ctx) -> Response:
        data = ctx.request.json_object()
        with tenant.lock:
            mailbox = ctx.mailbox()
            ev, changes = calendar.create_event(mailbox, data, actor(ctx), tenant.tenant_id)
            tenant.changed(mailbox, changes)
            body = render_event(ev, mailbox, ctx.view_options())
        body = {"@odata.context": ctx.user_context("events/$entity"), **body}
        return Response.json(201, body, ctx.preference_headers())

    @api.route("GET", EVENTS, "calendar.read")
    def list_events(ctx: Ctx) -> Response:
        options = ctx.view_options(expand=_expand(ctx))
        with tenant.lock:
            mailbox = ctx.mailbox()
            items = [e for e in mailbox.events.values() if e.kind != "exception"]
            items.sort(key=lambda e: (e.start, e.id))
            items = _filtered(ctx, items)
            return _page(ctx, mailbox, items, ctx.user_context("events"), options)

    @api.route("GET", EVENT, "calendar.read")
    def get_event(ctx: Ctx) -> Response:
        options = ctx.view_options(expand=_expand(ctx))
        with tenant.lock:
            mailbox = ctx.mailbox()
            ev = calendar.find(mailbox, ctx.params["event"], in_mailbox(ctx))
            body = render_event(ev, mailbox, options)
        body = {"@odata.context": ctx.user_context("events/$entity"), **body}
        return Response.json(200, body, ctx.preference_headers())

    @api.route("PATCH", EVENT, "calendar.write")
    def patch_event(ctx: Ctx) -> Response:
        data = ctx.request.json_object()
        with tenant.lock:
            mailbox = ctx.mailbox()
            ev, changes = calendar.update_event(
                mailbox,
                ctx.params["event"],
                data,
                actor(ctx),
                tenant.tenant_id,
                deleted_items=in_mailbox(ctx),
            )
            tenant.changed(mailbox, changes)
            body = render_event(ev, mailbox, ctx.view_options())
        body = {"@odata.context": ctx.user_context("events/$entity"), **body}
        return Response.json(200, body, ctx.preference_headers())

    @api.route("DELETE", EVENT, "calendar.write")
    def delete_event(ctx: Ctx) -> Response:
        with tenant.lock:
            mailbox = ctx.mailbox()
            changes = calendar.delete_event(mailbox, ctx.params["event"], in_mailbox(ctx))
            tenant.changed(mailbox, changes)
        return Response.empty(204)

    @api.route("GET", EVENT + r"/instances", "calendar.read")
    def instances(ctx: Ctx) -> Response:
        start, end = window(ctx)
        options = ctx.view_options(expand=_expand(ctx))
        with tenant.lock:
            mailbox = ctx.mailbox()
            master = calendar.find(mailbox, ctx.params["event"], in_mailbox(ctx))
            items = calendar.instances(master, start, end)
            items.sort(key=lambda e: (e.start, e.id))
            context = ctx.user_context(f"events('{master.id}')/instances")
            return _page(ctx, mailbox, items, context, options)

    @api.route("GET", VIEW, "calendar.read")
    def calendar_view(ctx: Ctx) -> Response:
        start, end = window(ctx)
        options = ctx.view_options(expand=_expand(ctx))
        with tenant.lock:
            mailbox = ctx.mailbox()
            items = _filtered(ctx, calendar.view_items(mailbox, start, end))
            return _page(ctx, mailbox, items, ctx.user_context("calendarView"), options)

    # Graph accepts the function with and without its parentheses; the SDK sends delta().
    @api.route("GET", VIEW + r"/delta(?:\(\))?", "calendar.read")
    def calendar_view_delta(ctx: Ctx) -> Response:
        query = ctx.request.query
        for unsupported in ("$select", "$expand", "$filter", "$orderby", "$search"):
            if unsupported in query:
                raise GraphError(
                    400,
                    "ErrorInvalidUrlQuery",
                    f"The following parameters are not supported with change tracking over the "
                    f"'CalendarView' resource: '{unsupported}'.",
                )
        size = ctx.page_size(ctx.settings.calendar_page_size)
        options = ctx.view_options()
        with tenant.lock:
            mailbox = ctx.mailbox()
            if "$skiptoken" in query:
                key, _, offset_text = query["$skiptoken"].rpartition(".")
                try:
                    offset = int(offset_text)
                except ValueError:
                    raise delta.gone() from None
            elif "$deltatoken" in query:
                key, offset = delta.resume(mailbox, query["$deltatoken"]), 0
            else:
                start, end = window(ctx)
                key, offset = delta.start_round(mailbox, start, end), 0
            chunk, next_skip, delta_key = delta.page(mailbox, key, offset, size)
            values: list[dict[str, Any]] = []
            for item_id, is_removed in chunk:
                if is_removed:
                    values.append(removed(item_id))
                    continue
                try:
                    ev = calendar.find(mailbox, item_id)
                except GraphError:
                    values.append(removed(item_id))
                    continue
                values.append(render_event(ev, mailbox, options, typed=True))
        path = ctx.request.path
        body: dict[str, Any] = {"@odata.context": f"{ctx.origin}/v1.0/$metadata#Collection(event)"}
        if next_skip is not None:
            body["@odata.nextLink"] = link(ctx.origin, path, {"$skiptoken": next_skip})
        else:
            assert delta_key is not None
            body["@odata.deltaLink"] = link(ctx.origin, path, {"$deltatoken": delta_key})
        body["value"] = values
        headers = ctx.preference_headers()
        headers["Preference-Applied"] = ", ".join(
            p for p in ("odata.track-changes", headers.get("Preference-Applied")) if p
        )
        return Response.json(200, body, headers)

    @api.route("POST", USER + r"/calendar/getSchedule", "schedule.read")
    def get_schedule(ctx: Ctx) -> Response:
        request = schedule_request(ctx.request.json_object())
        zone = ctx.view_options().time_zone
        result = []
        with tenant.lock:
            ctx.mailbox()
            readable = PERMISSIONS["schedule.read"][0]
            for address in request.schedules:
                # Each schedule needs a grant over its own mailbox (Exchange RBAC scope).
                granted = tenant.may(ctx.app_id, ctx.roles, readable, address)
                result.append(
                    _schedule(
                        tenant,
                        address,
                        request.start,
                        request.end,
                        request.interval,
                        zone,
                        granted,
                    )
                )
        return Response.json(
            200,
            {
                "@odata.context": f"{ctx.origin}/v1.0/$metadata#Collection("
                "microsoft.graph.scheduleInformation)",
                "value": result,
            },
            ctx.preference_headers(),
        )


MAX_SCHEDULES = 20  # GD concepts/outlook-get-free-busy-schedule.md, "Limits and error conditions"
MAX_WINDOW = timedelta(days=62)  # the same page: "must be less than 62 days"
SCHEDULE_PARAMETERS = {"schedules", "starttime", "endtime", "availabilityviewinterval"}


class ScheduleRequest(NamedTuple):
    schedules: list[str]
    start: datetime
    end: datetime
    interval: int


def schedule_request(data: dict[str, Any]) -> ScheduleRequest:
    """The body of getSchedule, checked as Exchange's availability service checks it.

    Parameter names match case-insensitively (Microsoft's own example writes ``Schedules``);
    any other parameter is refused."""
    params: dict[str, Any] = {}
    for key, value in data.items():
        name = key.lower()
        if name not in SCHEDULE_PARAMETERS:
            raise GraphError(
                400,
                "RequestBodyRead",
                f"The parameter '{key}' in the request payload is not a valid parameter for "
                "the operation 'getSchedule'.",
            )
        params[name] = value
    schedules = params.get("schedules")
    if not isinstance(schedules, list) or not schedules:
        raise GraphError(400, "ErrorInvalidParameter", "schedules must be a non-empty array.")
    if not all(isinstance(s, str) and s for s in schedules):
        raise GraphError(
            400, "RequestBodyRead", "Each entry of 'schedules' must be an SMTP address (a string)."
        )
    if len(schedules) > MAX_SCHEDULES:
        raise GraphError(
            400,
            "ErrorMailboxDataArrayTooBig",
            "There are too many target users in the EmailAddress array. The allowed size = "
            f"{MAX_SCHEDULES}; the actual size = {len(schedules)}.",
        )
    start, _, _ = calendar.parse_date_time_zone(params.get("starttime"), "startTime")
    end, _, _ = calendar.parse_date_time_zone(params.get("endtime"), "endTime")
    if end <= start:
        raise GraphError(
            400,
            "ErrorInvalidTimeInterval",
            "The time duration specified for FreeBusyViewOptions.TimeWindow is invalid.",
        )
    if end - start >= MAX_WINDOW:
        days = -(-(end - start) // timedelta(days=1))
        raise GraphError(
            400,
            "ErrorTimeIntervalTooBig",
            "The requested time duration specified for FreeBusyViewOptions.TimeWindow is too "
            f"long. The allowed limit = {MAX_WINDOW.days} days; the actual limit = {days} days.",
        )
    raw = params.get("availabilityviewinterval", 30)
    if raw is None:
        # docs issue #4494: an explicit null fails inside Exchange.
        raise GraphError(
            500, "ErrorInternalServerError", "An internal server error occurred. Try again later."
        )
    if isinstance(raw, bool) or not isinstance(raw, (int, str)) or not str(raw).isdigit():
        raise GraphError(
            400,
            "RequestBodyRead",
            f"Cannot convert the literal '{raw}' to the expected type 'Edm.Int32'.",
        )
    interval = int(raw)
    if not 5 <= interval <= 1440 or timedelta(minutes=interval) >= end - start:
        raise GraphError(
            400,
            "ErrorInvalidMergedFreeBusyInterval",
            "The specified merged free/busy interval is not valid. Specify an interval that is "
            "less than the free/busy time window and  between 5 and 1440 minutes.",
        )
    return ScheduleRequest([str(s) for s in schedules], start, end, interval)


def _schedule(
    tenant: Any,
    address: str,
    start: datetime,
    end: datetime,
    interval: int,
    zone: str,
    granted: bool = True,
) -> dict[str, Any]:
    mailbox = tenant.lookup(address)
    if mailbox is not None and (
        mailbox.state == "access_denied" or (mailbox.state == "ok" and not granted)
    ):
        error = {
            "message": "Access is denied. Check credentials and try again.",
            "responseCode": "ErrorAccessDenied",
        }
        return {"scheduleId": address, "error": error}
    if mailbox is None or mailbox.state != "ok":
        # docs issue #11225: an address Exchange cannot resolve is an item with only its id and
        # the error, whose responseCode is a number.
        error = {
            "message": f"Unable to resolve e-mail address {address} to an Active Directory object.",
            "responseCode": "5009",
        }
        return {"scheduleId": address, "error": error}
    items = [e for e in calendar.view_items(mailbox, start, end) if not e.is_cancelled]
    schedule_items = []
    for ev in items:
        entry: dict[str, Any] = {
            "isPrivate": ev.sensitivity == "private",
            "status": ev.show_as,
            "start": date_time_zone(ev, ev.start, zone),
            "end": date_time_zone(ev, ev.end, zone),
        }
        if ev.sensitivity != "private":
            entry["subject"] = ev.subject
            entry["location"] = ev.location.get("displayName", "")
        schedule_items.append(entry)
    slots = []
    step = timedelta(minutes=interval)
    cursor = start
    while cursor < end:
        slot_end = min(cursor + step, end)
        digit = "0"
        for ev in items:
            if ev.overlaps(cursor, slot_end):
                candidate = AVAILABILITY.get(ev.show_as, "0")
                if AVAILABILITY_RANK[candidate] > AVAILABILITY_RANK[digit]:
                    digit = candidate
        slots.append(digit)
        cursor = slot_end
    return {
        "scheduleId": address,
        "availabilityView": "".join(slots),
        "scheduleItems": schedule_items,
        "workingHours": {
            "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
            "startTime": "08:00:00.0000000",
            "endTime": "17:00:00.0000000",
            "timeZone": {"name": "UTC"},
        },
    }
