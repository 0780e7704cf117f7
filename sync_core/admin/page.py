"""The status page: server-rendered HTML, readable at a glance, no scripts, no build step.

Everything that comes from Graph, the platform or an admin (resource ids, addresses, error
texts, history details) is escaped with :func:`html.escape`; the page carries a Content Security
Policy that allows no scripts, no external resources and only its own inline style (by hash).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from html import escape
from typing import Any

from sync_core.admin.status import credential_tone
from sync_core.clock import ago, parse_iso
from sync_core.store.history import HistoryEntry

STYLE = """
:root { color-scheme: light; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; }
body { margin: 0; background: #f6f8fa; color: #1f2328; }
header { background: #24292f; color: #fff; padding: 16px 24px; }
header h1 { margin: 0; font-size: 20px; }
header p { margin: 4px 0 0; color: #d0d7de; font-size: 13px; }
main { padding: 16px 24px; max-width: 1200px; }
h2 { font-size: 16px; margin: 24px 0 8px; }
.banner { padding: 12px 16px; border-radius: 6px; font-weight: 600; margin-top: 16px; }
.banner.ok { background: #dafbe1; color: #1a7f37; border: 1px solid #4ac26b; }
.banner.warning { background: #fff8c5; color: #7d4e00; border: 1px solid #d4a72c; }
.banner.error { background: #ffebe9; color: #cf222e; border: 1px solid #ff8182; }
.cards { display: flex; gap: 16px; flex-wrap: wrap; align-items: flex-start; margin-top: 16px; }
.card { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 12px 16px;
        flex: 1 1 320px; }
.card h2 { margin-top: 0; }
.card.ok { border-left: 6px solid #2da44e; }
.card.warning { border-left: 6px solid #d4a72c; }
.card.error { border-left: 6px solid #cf222e; }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid #d0d7de; }
th, td { text-align: left; padding: 8px 10px; border-bottom: 1px solid #d8dee4;
         vertical-align: top; font-size: 14px; }
th { background: #f6f8fa; font-size: 12px; text-transform: uppercase; color: #57606a; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; min-width: 92px; text-align: center; padding: 2px 8px;
         border-radius: 12px; font-size: 12px; font-weight: 700; color: #fff; }
.badge.ok { background: #1a7f37; }
.badge.error { background: #cf222e; }
.badge.deactivated { background: #6e7781; }
tr.mapping.error td { background: #fff5f5; }
tr.detail td { background: #fff5f5; border-top: 0; padding-top: 0; }
.code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-weight: 600; }
.hint { color: #57606a; margin-top: 4px; }
.hint b { color: #1f2328; }
.muted { color: #6e7781; }
.outcome.failed, .outcome.parked, .outcome.conflict { color: #cf222e; font-weight: 600; }
.outcome.ok, .outcome.repaired { color: #1a7f37; }
"""

_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode("utf-8")).digest()).decode("ascii")

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; "
    f"style-src 'sha256-{_STYLE_HASH}'; "
    "img-src 'none'; "
    "base-uri 'none'; "
    "form-action 'none'; "
    "frame-ancestors 'none'"
)

PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the URL may carry ?code=<function key>
    "Cache-Control": "no-store",
}

STATE_LABELS = {"ok": "In sync", "error": "Error", "deactivated": "Deactivated"}
BANNERS = {
    "ok": "Everything is in sync.",
    "warning": "Sync runs, but something needs attention soon.",
    "error": "Something is not syncing. See the red entries below for what to do.",
}


def e(value: object) -> str:
    """Escaped text for HTML content and attribute values."""
    return escape("" if value is None else str(value), quote=True)


def _error_block(error: dict[str, Any] | None) -> str:
    if not error:
        return ""
    return (
        f'<div><span class="code">{e(error.get("code"))}</span>: {e(error.get("message"))}</div>'
        f'<div class="hint"><b>What to do:</b> {e(error.get("hint"))}</div>'
    )


def _credential_card(credential: dict[str, Any], now: datetime) -> str:
    state = str(credential.get("state") or "unknown")
    tone = credential_tone(state)
    kind = str(credential.get("kind") or "credential").replace("_", " ")
    lines = [f"<p><b>{e(kind.capitalize())}</b>: {e(credential.get('message') or state)}</p>"]
    if credential.get("expires_at"):
        days = credential.get("days_left")
        lines.append(
            f'<p>Expires: <span class="expires">{e(ago(credential["expires_at"], now))}</span>'
            + (f" — {e(days)} day(s) left" if days is not None else "")
            + "</p>"
        )
    if credential.get("hint") and state != "ok":
        lines.append(f'<p class="hint"><b>What to do:</b> {e(credential["hint"])}</p>')
    return (
        f'<section class="card credential {tone}" id="credential">'
        f"<h2>Credential: {e(state)}</h2>{''.join(lines)}</section>"
    )


def _work_card(work: dict[str, Any]) -> str:
    parked = int(work.get("parked") or 0)
    tone = "warning" if parked else "ok"
    rows = "".join(
        f"<tr><td>{e(q.get('queue'))}</td><td class='num'>{e(q.get('pending'))}</td>"
        f"<td class='num'>{e(q.get('parked'))}</td></tr>"
        for q in work.get("queues") or []
    )
    note = (
        '<p class="hint"><b>What to do:</b> parked work failed every retry; the history below '
        "says why. Fix the cause, then resync the mapping.</p>"
        if parked
        else ""
    )
    return (
        f'<section class="card work {tone}" id="work"><h2>Work</h2>'
        f"<p>Pending: <b>{e(work.get('pending'))}</b> · Parked: <b>{e(parked)}</b></p>"
        f"<table><thead><tr><th>Queue</th><th>Pending</th><th>Parked</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>{note}</section>"
    )


DIRECTION_LABELS = {
    "both": "",
    "to_outlook": "to Outlook only",
    "from_outlook": "from Outlook only",
}


def _mapping_rows(mappings: Iterable[dict[str, Any]], now: datetime) -> str:
    rows = []
    for m in mappings:
        state = str(m.get("state") or "ok")
        direction = str(m.get("direction") or "both")
        if m.get("subscription_lost"):
            subscription = "lost"
        elif m.get("subscription_expires_at"):
            subscription = ago(m.get("subscription_expires_at"), now)
        elif state == "deactivated" or direction == "to_outlook":
            subscription = "—"  # none wanted
        else:
            subscription = "none"
        shown = DIRECTION_LABELS.get(direction, direction)
        rows.append(
            f'<tr class="mapping {e(state)}" data-resource="{e(m.get("resource_id"))}">'
            f'<td><span class="badge {e(state)}">{e(STATE_LABELS.get(state, state))}</span></td>'
            f'<td class="resource">{e(m.get("resource_id"))}</td>'
            f'<td class="mailbox">{e(m.get("mailbox"))}<div class="muted">'
            f"privacy: {e(m.get('privacy'))}{'; ' + e(shown) if shown else ''}</div></td>"
            f'<td class="last-success">{e(ago(m.get("last_success"), now))}</td>'
            f'<td class="subscription">{e(subscription)}</td>'
            f'<td class="num pending">{e(m.get("pending"))}</td>'
            f'<td class="num parked">{e(m.get("parked"))}</td></tr>'
        )
        error = m.get("last_error")
        if error and state == "error":
            rows.append(
                f'<tr class="detail"><td></td><td colspan="6" class="last-error">'
                f"Last error {e(ago(error.get('at'), now))}: {_error_block(error)}</td></tr>"
            )
    if not rows:
        rows.append(
            '<tr><td colspan="7" class="muted">No mappings yet: map a resource with '
            "PUT /api/admin/mappings/{resource_id} or python -m sync_core map.</td></tr>"
        )
    return "".join(rows)


def _history_rows(entries: Iterable[HistoryEntry], now: datetime) -> str:
    rows = []
    for entry in entries:
        data = entry.to_json()
        detail = e(entry.detail)
        if entry.error:
            detail += f'<div class="hint"><b>What to do:</b> {e(entry.error.get("hint"))}</div>'
        rows.append(
            f"<tr><td>{e(ago(data['at'], now))}</td><td>{e(entry.resource_id or '—')}</td>"
            f"<td>{e(entry.action)}</td><td>{e(entry.subject)}</td>"
            f'<td class="outcome {e(entry.outcome)}">{e(entry.outcome)}</td><td>{detail}</td></tr>'
        )
    if not rows:
        rows.append('<tr><td colspan="6" class="muted">Nothing has happened yet.</td></tr>')
    return "".join(rows)


def render(
    status: dict[str, Any], history: Iterable[HistoryEntry] = (), *, refresh_seconds: int = 60
) -> str:
    """The whole page for a status document (:func:`sync_core.admin.status.build_status`)."""
    now = parse_iso(status.get("generated_at")) or datetime.now(UTC)
    overall = str(status.get("state") or "ok")
    summary = status.get("summary") or {}
    counts = (
        f"{e(summary.get('mappings', 0))} mapping(s): "
        f'<span id="count-connected">{e(summary.get("connected", 0))}</span> connected, '
        f'<span id="count-failed">{e(summary.get("failed", 0))}</span> failed, '
        f'<span id="count-deactivated">{e(summary.get("deactivated", 0))}</span> deactivated'
    )
    return (
        "<!doctype html>"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">'
        "<title>Calendar sync status</title>"
        f"<style>{STYLE}</style></head><body>"
        "<header><h1>Calendar sync status</h1>"
        f"<p>Generated {e(ago(status.get('generated_at'), now))}; refreshes every "
        f"{int(refresh_seconds)} s. {counts}.</p></header><main>"
        f'<div class="banner {e(overall)}" id="overall">{e(BANNERS.get(overall, overall))}</div>'
        '<div class="cards">'
        f"{_credential_card(status.get('credential') or {}, now)}"
        f"{_work_card(status.get('work') or {})}"
        "</div>"
        '<h2>Mappings</h2><table id="mappings"><thead><tr><th>State</th><th>Resource</th>'
        "<th>Mailbox</th><th>Last success</th><th>Subscription until</th><th>Pending</th>"
        "<th>Parked</th></tr></thead><tbody>"
        f"{_mapping_rows(status.get('mappings') or [], now)}</tbody></table>"
        '<h2>Recent history</h2><table id="history"><thead><tr><th>When</th><th>Resource</th>'
        "<th>What</th><th>Subject</th><th>Outcome</th><th>Detail</th></tr></thead><tbody>"
        f"{_history_rows(history, now)}</tbody></table>"
        "</main></body></html>"
    )
