"""``python -m sync_core``: the admin operations from a terminal.

Locally, the same functions as the HTTP API (``sync_core.admin``) run in this process with the
app's settings (environment, then ``local.settings.json``). With ``--url`` the same commands go
to a deployed app's admin API (``sync_core.admin.remote``) with its admin key (``--key``) and/or
an Entra token (``--entra``), and print the same. Tables for people, ``--json`` for scripts,
progress on stderr for long local operations, and the exit code says how it went:

- 0: done, everything fine;
- 1: the operation failed, or what it reports needs attention (a mapping in error, a failed
  doctor check, an expired credential);
- 2: the command line or a setting is wrong (one line names it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from sync_core import availability as availability_
from sync_core.admin import bulk, doctor, rooms
from sync_core.admin import mappings as admin
from sync_core.admin import status as status_
from sync_core.admin.platform_test import send_platform_test
from sync_core.admin.problems import GraphProblem
from sync_core.admin.progress import Progress
from sync_core.admin.purge import remove_mapping
from sync_core.admin.remote import Remote, RemoteProblem, entra_token
from sync_core.admin.resync import resync
from sync_core.clock import ago
from sync_core.config import ConfigError, load_settings
from sync_core.graph import GraphError
from sync_core.problems import Problem
from sync_core.services import Services

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
KEY_VARIABLE = "SYNC_ADMIN_KEY"


class Output:
    """Where results go: a table for people, JSON for scripts."""

    def __init__(self, as_json: bool, out: TextIO, err: TextIO) -> None:
        self.as_json = as_json
        self.out = out
        self.err = err

    def line(self, text: str = "") -> None:
        print(text, file=self.out)

    def data(self, document: Any) -> None:
        json.dump(document, self.out, indent=2, default=str, ensure_ascii=False)
        self.out.write("\n")

    def progress(self) -> Progress:
        """Progress of a long operation on stderr: its start, every 50 items, and its end."""

        def report(step: str, done: int, total: int) -> None:
            if done in (0, total) or done % 50 == 0:
                print(f"{step}: {done}/{total}", file=self.err, flush=True)

        return report


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    """Columns aligned to their widest cell; the last column is not padded."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def _error_lines(error: dict[str, Any] | None, indent: str = "  ") -> list[str]:
    if not error:
        return []
    return [
        f"{indent}{error.get('code')}: {error.get('message')}",
        f"{indent}hint: {error.get('hint')}",
    ]


# -- where the operations run -------------------------------------------------------------------


class Admin(Protocol):
    """The admin operations as JSON documents: :class:`Local` runs them here, ``Remote`` asks a
    deployed app's admin API. Both raise a :class:`Problem` when an operation is refused."""

    def rooms(self, resource_ids: list[str]) -> dict[str, Any]: ...

    def get_mapping(self, resource_id: str) -> dict[str, Any] | None: ...

    def save_mapping(
        self,
        resource_id: str,
        body: dict[str, Any],
        *,
        if_match: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]: ...

    def remove_mapping(
        self, resource_id: str, *, purge: bool = False, progress: Progress | None = None
    ) -> dict[str, Any] | None: ...

    def status(self) -> dict[str, Any]: ...

    def history(
        self, *, resource_id: str | None, limit: int, continuation: str | None
    ) -> dict[str, Any]: ...

    def doctor(self) -> dict[str, Any]: ...

    def platform_test(self) -> dict[str, Any]: ...

    def resync(self, resource_id: str, *, progress: Progress | None = None) -> dict[str, Any]: ...

    def bulk_map(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def bulk_deactivate(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def bulk_delete(self, body: dict[str, Any], *, purge: bool = False) -> dict[str, Any]: ...

    def availability(self, body: dict[str, Any]) -> dict[str, Any]: ...


class Local:
    """The operations in this process, on the app's own storage and Graph."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def rooms(self, resource_ids: list[str]) -> dict[str, Any]:
        return rooms.list_rooms(self.svc, resource_ids).to_json()

    def get_mapping(self, resource_id: str) -> dict[str, Any] | None:
        current = self.svc.mappings.get(resource_id)
        return dict(current.to_json()) if current else None

    def save_mapping(
        self,
        resource_id: str,
        body: dict[str, Any],
        *,
        if_match: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        result = admin.save_mapping(
            self.svc, resource_id, body, if_match=if_match, progress=progress
        )
        return {
            **result.mapping.to_json(),
            "created": result.created,
            "warnings": result.warnings,
            "bookings_queued": result.bookings_queued,
        }

    def remove_mapping(
        self, resource_id: str, *, purge: bool = False, progress: Progress | None = None
    ) -> dict[str, Any] | None:
        counts = remove_mapping(self.svc, resource_id, purge=purge, progress=progress)
        return counts.to_json() if counts else None

    def status(self) -> dict[str, Any]:
        return status_.build_status(self.svc)

    def history(
        self, *, resource_id: str | None, limit: int, continuation: str | None
    ) -> dict[str, Any]:
        entries, token = status_.history_page(
            self.svc, resource_id=resource_id, limit=limit, continuation=continuation
        )
        return {"value": [e.to_json() for e in entries], "continuation": token}

    def doctor(self) -> dict[str, Any]:
        return doctor.run_doctor(self.svc)

    def platform_test(self) -> dict[str, Any]:
        return send_platform_test(self.svc)

    def resync(self, resource_id: str, *, progress: Progress | None = None) -> dict[str, Any]:
        return resync(self.svc, resource_id, progress=progress).to_json()

    def bulk_map(self, body: dict[str, Any]) -> dict[str, Any]:
        return bulk.bulk_map(self.svc, body).to_json()

    def bulk_deactivate(self, body: dict[str, Any]) -> dict[str, Any]:
        return bulk.bulk_deactivate(self.svc, body).to_json()

    def bulk_delete(self, body: dict[str, Any], *, purge: bool = False) -> dict[str, Any]:
        return bulk.bulk_delete(self.svc, body, purge=purge).to_json()

    def availability(self, body: dict[str, Any]) -> dict[str, Any]:
        request = availability_.parse_request(body)
        return availability_.availability(self.svc, request).to_json()


# -- commands ----------------------------------------------------------------------------------


def cmd_rooms(ops: Admin, args: argparse.Namespace, out: Output) -> int:
    wanted = [r.strip() for r in (args.resource_ids or "").split(",") if r.strip()]
    report = ops.rooms(wanted)
    if out.as_json:
        out.data(report)
        return EXIT_OK
    rows = [
        (
            r["address"],
            r["display_name"],
            r["capacity"] if r.get("capacity") is not None else "",
            ", ".join(r.get("room_lists") or []),
            r.get("mapped_to") or "-",
        )
        for r in report["rooms"]
    ]
    out.line(table(rows, ("ADDRESS", "NAME", "CAPACITY", "ROOM LISTS", "MAPPED TO")))
    out.line(f"{len(report['rooms'])} room(s) in {len(report['room_lists'])} room list(s)")
    if report["suggestions"]:
        out.line()
        out.line("Suggested mappings:")
        out.line(
            table(
                [
                    (
                        s["resource_id"],
                        s.get("mailbox") or "(no match)",
                        s["match"],
                        s.get("mapped_mailbox") or "-",
                    )
                    for s in report["suggestions"]
                ],
                ("RESOURCE", "MAILBOX", "MATCH", "MAPPED NOW"),
            )
        )
    return EXIT_OK


def cmd_map(ops: Admin, args: argparse.Namespace, out: Output) -> int:
    current = ops.get_mapping(args.resource_id)
    mailbox = args.mailbox or (current["mailbox"] if current else None)
    if mailbox is None:
        out.err.write(f"error: {args.resource_id} is not mapped yet: give its MAILBOX\n")
        return EXIT_USAGE
    body = {
        "mailbox": mailbox,
        "privacy": args.privacy or (current["privacy"] if current else "busy_only"),
        "enabled": args.enabled
        if args.enabled is not None
        else (current["enabled"] if current else True),
        "direction": args.direction or (current.get("direction", "both") if current else "both"),
        "filters": _filters(args, current),
    }
    result = ops.save_mapping(
        args.resource_id,
        body,
        if_match=(current.get("etag") or None) if current else None,
        progress=out.progress(),
    )
    if out.as_json:
        out.data(result)
        return EXIT_FAILED if result["warnings"] else EXIT_OK
    verb = "created" if result["created"] else "updated"
    state = "enabled" if result["enabled"] else "deactivated (sync stopped, entries kept)"
    out.line(
        f"{result['resource_id']} → {result['mailbox']}: {verb}; privacy {result['privacy']}; "
        f"direction {result.get('direction', 'both')}; {state}"
    )
    ignored = [
        {"ignore_all_day": "all-day events", "ignore_declined": "declined meetings"}[name]
        for name, on in (result.get("filters") or {}).items()
        if on is True
    ]
    if (result.get("filters") or {}).get("ignore_title_pattern"):
        ignored.append(f"titles matching {result['filters']['ignore_title_pattern']!r}")
    if ignored:
        out.line("ignores " + ", ".join(ignored))
    if result["bookings_queued"]:
        out.line(f"{result['bookings_queued']} booking(s) queued to be re-applied")
    for warning in result["warnings"]:
        out.line("warning: the mapping is saved, but sync could not start:")
        for text in _error_lines(warning):
            out.line(text)
    return EXIT_FAILED if result["warnings"] else EXIT_OK


def _filters(args: argparse.Namespace, current: dict[str, Any] | None) -> dict[str, Any]:
    """The mapping's filters: those given on the command line, the others as they are."""
    filters = dict((current or {}).get("filters") or {})
    if args.ignore_all_day is not None:
        filters["ignore_all_day"] = args.ignore_all_day
    if args.ignore_title is not None:
        filters["ignore_title_pattern"] = args.ignore_title or None
    if args.ignore_declined is not None:
        filters["ignore_declined"] = args.ignore_declined
    return filters


def cmd_unmap(ops: Admin, args: argparse.Namespace, out: Output) -> int:
    counts = ops.remove_mapping(args.resource_id, purge=args.purge, progress=out.progress())
    if out.as_json:
        out.data({"resource_id": args.resource_id, **(counts or {})})
        return EXIT_OK
    if counts is None:
        out.line(f"{args.resource_id}: unmapped; its events and blockers are kept")
    else:
        out.line(
            f"{args.resource_id}: unmapped and purged: {counts['deleted_events']} event(s) "
            f"deleted ({counts['already_gone']} already gone), {counts['deleted_blockers']} "
            "blocker(s) withdrawn"
        )
    return EXIT_OK


def cmd_status(ops: Admin, args: argparse.Namespace, out: Output) -> int:
    document = ops.status()
    code = EXIT_FAILED if document["state"] == "error" else EXIT_OK
    if out.as_json:
        out.data(document)
        return code
    now = datetime.now(UTC)
    credential = document["credential"]
    kind = str(credential.get("kind") or "credential").replace("_", " ")
    out.line(f"Overall: {document['state']}")
    out.line(f"Credential ({kind}): {credential.get('state')}: {credential.get('message')}")
    if credential.get("expires_at"):
        out.line(f"  expires {ago(credential['expires_at'], now)}")
    if credential.get("state") != "ok" and credential.get("hint"):
        out.line(f"  hint: {credential['hint']}")
    work = document["work"]
    queues = ", ".join(f"{q['queue']} {q['pending']}/{q['parked']}" for q in work["queues"])
    out.line(f"Work: {work['pending']} pending, {work['parked']} parked ({queues})")
    summary = document.get("summary") or {}
    out.line(
        f"Mappings: {summary.get('mappings', 0)} in all, {summary.get('connected', 0)} "
        f"connected, {summary.get('failed', 0)} failed, {summary.get('deactivated', 0)} "
        "deactivated"
    )
    out.line()
    if not document["mappings"]:
        out.line("No mappings yet: python -m sync_core map RESOURCE MAILBOX")
        return code
    headers = ("STATE", "RESOURCE", "MAILBOX", "LAST SUCCESS", "SUBSCRIPTION UNTIL", "PEND", "PARK")
    rows = [
        (
            m["state"],
            m["resource_id"],
            m["mailbox"],
            ago(m["last_success"], now),
            "lost"
            if m.get("subscription_lost")
            else ago(m["subscription_expires_at"], now)
            if m["subscription_expires_at"]
            else "-",
            m["pending"],
            m["parked"],
        )
        for m in document["mappings"]
    ]
    lines = table(rows, headers).splitlines()
    blocks = [lines[0]]
    for m, text in zip(document["mappings"], lines[1:], strict=True):
        blocks.append(text)
        if m["state"] == "error":
            blocks += _error_lines(m["last_error"], "    ")
    for text in blocks:
        out.line(text)
    return code


def cmd_history(ops: Admin, args: argparse.Namespace, out: Output) -> int:
    page = ops.history(resource_id=args.resource, limit=args.limit, continuation=args.continuation)
    if out.as_json:
        out.data(page)
        return EXIT_OK
    entries, continuation = page["value"], page.get("continuation")
    now = datetime.now(UTC)
    headers = ("WHEN", "RESOURCE", "ACTION", "SUBJECT", "OUTCOME", "DETAIL")
    rows = [
        (
            ago(e["at"], now),
            e.get("resource_id") or "-",
            e["action"],
            e["subject"],
            e["outcome"],
            e["detail"],
        )
        for e in entries
    ]
    lines = table(rows, headers).splitlines()
    out.line(lines[0])
    for entry, text in zip(entries, lines[1:], strict=True):
        out.line(text)
        for extra in _error_lines(entry.get("error"), "    "):
            out.line(extra)
    if not entries:
        out.line("(nothing recorded)")
    if continuation:
        out.line(f"more: --continuation {continuation}")
    return EXIT_OK


def cmd_doctor(ops: Admin, args: argparse.Namespace, out: Output) -> int:
    report = ops.doctor()
    code = EXIT_FAILED if report["result"] == "fail" else EXIT_OK
    if out.as_json:
        out.data(report)
        return code
    width = max(len(c["name"]) for c in report["checks"])
    for check in report["checks"]:
        mark = {"pass": "PASS", "warn": "WARN", "fail": "FAIL"}[check["status"]]
        code_text = f" ({check['code']})" if check.get("code") and check["status"] != "pass" else ""
        out.line(f"[{mark}] {check['name'].ljust(width)}  {check['message']}{code_text}")
        if check["status"] != "pass" and check.get("hint"):
            out.line(f"       {' ' * width}  hint: {check['hint']}")
    if report["deactivated"]:
        out.line(f"not checked (deactivated): {', '.join(report['deactivated'])}")
    out.line(f"doctor: {report['result']}")
    return code


def cmd_platform_test(ops: Admin, args: argparse.Namespace, out: Output) -> int:
    result = ops.platform_test()
    code = EXIT_OK if result["delivered"] else EXIT_FAILED
    if out.as_json:
        out.data(result)
        return code
    answered = f"HTTP {result['status']}" if result.get("status") is not None else "no answer"
    if result["delivered"]:
        out.line(f"platform.test delivered: {answered} in {result['latency_ms']} ms")
    else:
        out.line(f"platform.test NOT delivered ({answered}, {result['latency_ms']} ms)")
        out.line(f"  {result.get('error') or 'the platform refused it'}")
        out.line(
            "  hint: check PLATFORM_WEBHOOK_URL, that the platform answers it, and that it "
            "verifies with the same PLATFORM_WEBHOOK_SECRET"
        )
    return code


def cmd_resync(ops: Admin, args: argparse.Namespace, out: Output) -> int:
    report = ops.resync(args.resource_id, progress=out.progress())
    if out.as_json:
        out.data(report)
        return EXIT_OK
    out.line(
        f"{report['resource_id']} ({report['mailbox']}): subscription {report['subscription']}; "
        f"a full read of the calendar is queued; {report['bookings_queued']} booking(s) queued "
        "to be re-applied"
    )
    return EXIT_OK


def _bulk_report(document: dict[str, Any], out: Output, what: str) -> int:
    """A bulk answer: one row per item (errors with their hint), then the counts."""
    results = document["results"]
    code = EXIT_FAILED if any(r["status"] == "error" for r in results) else EXIT_OK
    if out.as_json:
        out.data(document)
        return code
    if results:
        lines = table(
            [(r["resource_id"], r.get("mailbox") or "-", r["status"]) for r in results],
            ("RESOURCE", "MAILBOX", "STATUS"),
        ).splitlines()
        out.line(lines[0])
        for result, text in zip(results, lines[1:], strict=True):
            out.line(text)
            for extra in _error_lines(result.get("error"), "    "):
                out.line(extra)
            for field_error in (result.get("error") or {}).get("errors") or []:
                out.line(f"    {field_error.get('field')}: {field_error.get('message')}")
            for warning in result.get("warnings") or []:
                out.line("    warning: saved, but sync could not start:")
                for extra in _error_lines(warning, "      "):
                    out.line(extra)
    counts = ", ".join(f"{count} {status}" for status, count in document["counts"].items())
    prefix = "dry run (nothing written): " if document.get("dry_run") else ""
    out.line(f"{prefix}{what}: {counts}")
    return code


def _bulk_body(args: argparse.Namespace) -> dict[str, Any]:
    """The body of a bulk mapping request from --file, or a rule from --room-list/--mailboxes."""
    sources = [s for s in (args.file, args.room_list, args.mailboxes) if s]
    if len(sources) != 1:
        raise UsageError("give one of --file, --room-list and --mailboxes")
    fields: dict[str, Any] = {}
    if args.privacy:
        fields["privacy"] = args.privacy
    if args.enabled is not None:
        fields["enabled"] = args.enabled
    if args.file:
        if args.template or fields:
            raise UsageError("--template, --privacy, --enable and --disable go with a rule")
        try:
            with open(args.file, encoding="utf-8") as handle:
                document = json.load(handle)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--file {args.file}: {exc}") from None
        body = {"mappings": document} if isinstance(document, list) else document
        if not isinstance(body, dict):
            raise UsageError(f"--file {args.file}: must hold a list of mappings or an object")
    else:
        if not args.template:
            raise UsageError("--room-list and --mailboxes need --template, like 'room-{local}'")
        rule: dict[str, Any] = {"resource_id_template": args.template, **fields}
        if args.room_list:
            rule["room_list"] = args.room_list
        else:
            rule["mailboxes"] = [m.strip() for m in args.mailboxes.split(",") if m.strip()]
        body = {"rule": rule}
    if args.dry_run:
        body["dry_run"] = True
    return body


def cmd_map_bulk(ops: Admin, args: argparse.Namespace, out: Output) -> int:
    return _bulk_report(ops.bulk_map(_bulk_body(args)), out, "mappings")


def _targets(args: argparse.Namespace) -> dict[str, Any]:
    if args.all == bool(args.resource_ids):
        raise UsageError("name the resources, or give --all")
    return {"all": True} if args.all else {"resource_ids": list(args.resource_ids)}


def _repeat(
    call: Callable[[dict[str, Any]], dict[str, Any]], body: dict[str, Any]
) -> dict[str, Any]:
    """With --all, ask again while mappings remain and the last round got somewhere."""
    document = call(body)
    last = document
    while last.get("remaining") and any(r["status"] != "error" for r in last["results"]):
        last = call(body)
        document = {
            "results": document["results"] + last["results"],
            "counts": {k: document["counts"].get(k, 0) + v for k, v in last["counts"].items()},
            "remaining": last.get("remaining", 0),
        }
    return document


def cmd_deactivate_bulk(ops: Admin, args: argparse.Namespace, out: Output) -> int:
    document = _repeat(ops.bulk_deactivate, _targets(args))
    return _bulk_report(document, out, "deactivation")


def cmd_unmap_bulk(ops: Admin, args: argparse.Namespace, out: Output) -> int:
    document = _repeat(lambda body: ops.bulk_delete(body, purge=args.purge), _targets(args))
    return _bulk_report(document, out, "unmapped and purged" if args.purge else "unmapped")


def cmd_availability(ops: Admin, args: argparse.Namespace, out: Output) -> int:
    body: dict[str, Any] = {"start": args.start, "end": args.end}
    if args.resource:
        body["resource_ids"] = args.resource
    if args.mailbox:
        body["mailboxes"] = args.mailbox
    answer = ops.availability(body)
    items = answer["value"]
    failed = any(item.get("error") for item in items)
    if out.as_json:
        out.data(answer)
        return EXIT_FAILED if failed else EXIT_OK
    rows = []
    for item in items:
        who = item.get("resource_id") or item.get("mailbox") or "-"
        for busy in item["busy"]:
            rows.append((who, busy["start"], busy["end"], busy["show_as"], busy["source"]))
        if not item["busy"] and not item.get("error"):
            rows.append((who, "(free)", "", "", ""))
    out.line(table(rows, ("RESOURCE/MAILBOX", "START", "END", "SHOW AS", "SOURCE")))
    for item in items:
        if item.get("error"):
            who = item.get("resource_id") or item.get("mailbox")
            out.line(f"{who}: not answered")
            for text in _error_lines(item["error"]):
                out.line(text)
    return EXIT_FAILED if failed else EXIT_OK


Command = Callable[[Admin, argparse.Namespace, Output], int]


def _target_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """--url, --key, --entra, --entra-scope: before the command, or after it (``default`` is
    SUPPRESS there, so that an option given before is not reset)."""
    target = parser.add_argument_group("a deployed app (instead of the local settings)")
    target.add_argument(
        "--url", default=default, help="the function app's address: https://<app>.azurewebsites.net"
    )
    target.add_argument(
        "--key",
        default=default,
        help=f"the app's admin key (a host key); default: ${KEY_VARIABLE}",
    )
    target.add_argument(
        "--entra",
        action="store_true",
        default=default,
        help="also send an Entra access token (DefaultAzureCredential: az login, ...)",
    )
    target.add_argument(
        "--entra-scope",
        default=default,
        metavar="SCOPE",
        help="the token's scope: the Application ID URI the app's sign-in accepts "
        "(api://<client-id>); default: $SYNC_ADMIN_SCOPE",
    )


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    _target_options(common, argparse.SUPPRESS)
    root = argparse.ArgumentParser(
        prog="python -m sync_core",
        description="Admin the calendar sync: rooms, mappings, status, history, doctor.",
        epilog="Settings come from the environment, then local.settings.json (as the app's). "
        "With --url, the commands go to that app's admin API instead.",
    )
    _target_options(root, None)
    root.set_defaults(entra=False)
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rooms = sub.add_parser("rooms", parents=[common], help="list Microsoft 365 rooms")
    rooms.add_argument(
        "--resource-ids", metavar="A,B", help="suggest a room for each platform resource id"
    )
    rooms.set_defaults(run=cmd_rooms)

    map_ = sub.add_parser(
        "map", parents=[common], help="map a resource to a mailbox (or change, deactivate it)"
    )
    map_.add_argument("resource_id", metavar="RESOURCE")
    map_.add_argument("mailbox", metavar="MAILBOX", nargs="?", help="kept if already mapped")
    map_.add_argument("--privacy", choices=("full", "busy_only"))
    enabled = map_.add_mutually_exclusive_group()
    enabled.add_argument("--enable", dest="enabled", action="store_const", const=True)
    enabled.add_argument(
        "--disable",
        dest="enabled",
        action="store_const",
        const=False,
        help="stop sync both ways and keep every entry",
    )
    map_.add_argument(
        "--direction",
        choices=("both", "to_outlook", "from_outlook"),
        help="to_outlook: bookings only; from_outlook: blockers only (read-only access)",
    )
    map_.add_argument(
        "--ignore-all-day",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="all-day Outlook events block nothing",
    )
    map_.add_argument(
        "--ignore-title",
        metavar="PATTERN",
        help="Outlook events whose title matches this regular expression block nothing "
        "('' clears it)",
    )
    map_.add_argument(
        "--ignore-declined",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="meetings the mailbox declined block nothing",
    )
    map_.set_defaults(run=cmd_map, enabled=None)

    unmap = sub.add_parser("unmap", parents=[common], help="remove a mapping")
    unmap.add_argument("resource_id", metavar="RESOURCE")
    unmap.add_argument(
        "--purge",
        action="store_true",
        help="also delete the events the service wrote and withdraw its blockers",
    )
    unmap.set_defaults(run=cmd_unmap)

    map_bulk = sub.add_parser(
        "map-bulk",
        parents=[common],
        help="map many resources: from a file, or every room of a room list or listed mailboxes",
        description="Each mapping is checked and written on its own; one's error stops no other. "
        "Mappings that already have the values are left alone (unchanged).",
    )
    map_bulk.add_argument(
        "--file", metavar="FILE", help='JSON: a list of {"resource_id", "mailbox", ...}'
    )
    map_bulk.add_argument("--room-list", metavar="ADDRESS", help="every room of this room list")
    map_bulk.add_argument("--mailboxes", metavar="A,B", help="these mailboxes")
    map_bulk.add_argument(
        "--template",
        metavar="TEMPLATE",
        help="resource id of each mailbox of a rule: {local} (before the @), {address}",
    )
    map_bulk.add_argument("--privacy", choices=("full", "busy_only"))
    bulk_enabled = map_bulk.add_mutually_exclusive_group()
    bulk_enabled.add_argument("--enable", dest="enabled", action="store_const", const=True)
    bulk_enabled.add_argument("--disable", dest="enabled", action="store_const", const=False)
    map_bulk.add_argument(
        "--dry-run", action="store_true", help="check everything, write nothing, say what would be"
    )
    map_bulk.set_defaults(run=cmd_map_bulk, enabled=None)

    for name, run, helped in (
        ("deactivate-bulk", cmd_deactivate_bulk, "stop sync of many mappings, keep every entry"),
        ("unmap-bulk", cmd_unmap_bulk, "remove many mappings"),
    ):
        many = sub.add_parser(name, parents=[common], help=helped)
        many.add_argument("resource_ids", metavar="RESOURCE", nargs="*")
        many.add_argument("--all", action="store_true", help="every mapping")
        if name == "unmap-bulk":
            many.add_argument(
                "--purge",
                action="store_true",
                help="also delete the events the service wrote and withdraw its blockers",
            )
        many.set_defaults(run=run)

    status = sub.add_parser("status", parents=[common], help="credential, mappings, work")
    status.set_defaults(run=cmd_status)

    history = sub.add_parser("history", parents=[common], help="what happened, newest first")
    history.add_argument("--resource", metavar="RESOURCE")
    history.add_argument("--limit", type=int, default=50)
    history.add_argument("--continuation", metavar="TOKEN")
    history.set_defaults(run=cmd_history)

    doctor = sub.add_parser("doctor", parents=[common], help="check the whole set-up")
    doctor.set_defaults(run=cmd_doctor)

    platform_test = sub.add_parser(
        "platform-test",
        parents=[common],
        help="send a signed test event to the platform and say how it answered",
    )
    platform_test.set_defaults(run=cmd_platform_test)

    resync_cmd = sub.add_parser(
        "resync", parents=[common], help="start a fresh round in both directions"
    )
    resync_cmd.add_argument("resource_id", metavar="RESOURCE")
    resync_cmd.set_defaults(run=cmd_resync)

    free_busy = sub.add_parser(
        "availability", parents=[common], help="busy times of resources and mailboxes"
    )
    free_busy.add_argument(
        "--resource", action="append", metavar="RESOURCE", help="a mapped resource (repeatable)"
    )
    free_busy.add_argument(
        "--mailbox", action="append", metavar="ADDRESS", help="a tenant mailbox (repeatable)"
    )
    free_busy.add_argument(
        "--start", required=True, help="RFC 3339 with offset, like 2030-01-07T00:00:00Z"
    )
    free_busy.add_argument("--end", required=True, help="at most 62 days after --start")
    free_busy.set_defaults(run=cmd_availability)
    return root


def _problem(problem: Problem, out: Output) -> int:
    """A refusal, from its problem document (the same one the API answers): the document
    itself with --json; else its detail, field errors, code and hint on stderr."""
    document = problem.to_json()
    exit_code = problem.exit_code if isinstance(problem, RemoteProblem) else EXIT_FAILED
    if out.as_json:
        out.data(document)
        return exit_code
    detail = document.get("detail") or document.get("title") or "the operation failed"
    print(f"error: {detail}", file=out.err)
    for field_error in document.get("errors") or []:
        if field_error.get("message") != detail:
            print(f"  {field_error.get('field')}: {field_error.get('message')}", file=out.err)
    if document.get("code"):
        print(f"code: {document['code']}", file=out.err)
    if document.get("hint"):
        print(f"hint: {document['hint']}", file=out.err)
    return exit_code


class UsageError(Exception):
    """The command line is wrong: one line says how (exit 2)."""


def _admin(args: argparse.Namespace, services: Callable[[], Services] | None) -> Admin:
    """The one place that picks where the operations run: the app at --url, or here."""
    if not args.url:
        if args.key or args.entra or args.entra_scope:
            raise UsageError("--key, --entra and --entra-scope go with --url")
        return Local(services() if services else Services(load_settings()))
    key = args.key or os.environ.get(KEY_VARIABLE, "").strip() or None
    token = None
    if args.entra:
        scope = args.entra_scope or os.environ.get("SYNC_ADMIN_SCOPE", "").strip()
        if not scope:
            raise UsageError(
                "--entra needs --entra-scope (or SYNC_ADMIN_SCOPE): the Application ID URI the "
                "app's sign-in accepts, like api://<client-id>"
            )
        token = entra_token(scope if scope.endswith("/.default") else f"{scope}/.default")
    try:
        return Remote(args.url, key=key, token=token)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    services: Callable[[], Services] | None = None,
) -> int:
    stdout, stderr = out or sys.stdout, err or sys.stderr
    try:
        args = parser().parse_args(argv)
    except SystemExit as exit_:  # argparse printed the usage
        return int(exit_.code or 0)
    output = Output(args.json, stdout, stderr)
    run: Command = args.run
    try:
        return run(_admin(args, services), args, output)
    except (ConfigError, UsageError) as exc:
        print(f"error: {exc}", file=stderr)
        return EXIT_USAGE
    except Problem as problem:
        return _problem(problem, output)
    except GraphError as error:
        return _problem(GraphProblem(error.to_json()), output)
    except KeyboardInterrupt:
        print("interrupted", file=stderr)
        return 130
    except Exception as exc:  # storage unreachable and the like: one line, no traceback
        print(
            f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            file=stderr,
        )
        return EXIT_FAILED
