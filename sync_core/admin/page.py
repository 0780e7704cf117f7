"""The status page and the console's frame: server-rendered HTML, readable at a glance, no
scripts, no build step.

Everything that comes from Graph, the platform or an admin (resource ids, addresses, error
texts, history details) is escaped with :func:`html.escape`; every page carries a Content
Security Policy that allows no scripts, no external resources, only its own inline style (by
hash) and forms that post to this app.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable
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
.badge.deactivated { background: #57606a; }
tr.mapping.error td { background: #fff5f5; }
tr.detail td { background: #fff5f5; border-top: 0; padding-top: 0; }
.code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-weight: 600; }
.hint { color: #57606a; margin-top: 4px; }
.hint b { color: #1f2328; }
.muted { color: #57606a; }
.outcome.failed, .outcome.parked, .outcome.conflict { color: #cf222e; font-weight: 600; }
.outcome.ok, .outcome.repaired { color: #1a7f37; }
nav { background: #32383f; padding: 0 24px; display: flex; flex-wrap: wrap; gap: 4px; }
nav a { color: #fff; padding: 10px 12px; text-decoration: none; font-size: 14px; }
nav a:hover, nav a:focus { background: #57606a; }
nav a[aria-current="page"] { box-shadow: inset 0 -3px 0 #fff; font-weight: 700; }
a { color: #0550ae; }
a:focus, button:focus, input:focus, select:focus, textarea:focus, summary:focus {
  outline: 3px solid #0969da; outline-offset: 2px; }
form.panel, section.panel { background: #fff; border: 1px solid #d0d7de; border-radius: 6px;
  padding: 12px 16px; margin: 12px 0; }
.field { margin: 10px 0; }
.field label, .field legend { display: block; font-weight: 600; margin-bottom: 4px; }
.field .help { color: #57606a; font-size: 13px; margin-top: 2px; }
fieldset { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 12px; }
input[type=text], input[type=email], select, textarea { font: inherit; padding: 6px 8px;
  border: 1px solid #57606a; border-radius: 6px; width: 100%; max-width: 420px;
  box-sizing: border-box; background: #fff; color: #1f2328; }
textarea { min-height: 90px; }
.check { display: flex; gap: 8px; align-items: center; margin: 6px 0; }
button { font: inherit; font-weight: 600; padding: 6px 14px; border-radius: 6px; cursor: pointer;
  border: 1px solid #1f2328; background: #f6f8fa; color: #1f2328; margin: 4px 8px 4px 0; }
button.primary { background: #1a7f37; border-color: #1a7f37; color: #fff; }
button.danger { background: #cf222e; border-color: #cf222e; color: #fff; }
.actions { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; }
.actions form { margin: 0; }
.notice { padding: 10px 14px; border-radius: 6px; margin: 12px 0; }
.notice.ok { background: #dafbe1; color: #116329; border: 1px solid #4ac26b; }
.notice.error { background: #ffebe9; color: #a40e26; border: 1px solid #ff8182; }
.check-pass { color: #116329; font-weight: 700; }
.check-warn { color: #7d4e00; font-weight: 700; }
.check-fail { color: #a40e26; font-weight: 700; }
.table-wrap { overflow-x: auto; position: relative; }
.visually-hidden { position: absolute; width: 1px; height: 1px; margin: -1px; padding: 0;
  border: 0; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
@media (max-width: 640px) {
  header, main, nav { padding-left: 12px; padding-right: 12px; }
  th, td { padding: 6px; font-size: 13px; }
  .badge { min-width: 0; }
  .wide-only { display: none; }
}
"""

_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode("utf-8")).digest()).decode("ascii")

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; "
    f"style-src 'sha256-{_STYLE_HASH}'; "
    "img-src 'none'; "
    "base-uri 'none'; "
    "form-action 'self'; "
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


def scroller(title_id: str) -> str:
    """The opening of a box a wide table scrolls in on a phone: reachable by keyboard and named
    by its heading."""
    return f'<div class="table-wrap" tabindex="0" role="region" aria-labelledby="{title_id}">'


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


def _mapping_rows(
    mappings: Iterable[dict[str, Any]],
    now: datetime,
    link: Callable[[str], str] | None = None,
) -> str:
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
            f'<td class="resource">{_resource_cell(str(m.get("resource_id")), link)}</td>'
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


def _resource_cell(resource_id: str, link: Callable[[str], str] | None) -> str:
    if link is None:
        return e(resource_id)
    return f'<a href="{e(link(resource_id))}">{e(resource_id)}</a>'


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


def layout(title: str, body: str, *, nav: str = "", subtitle: str = "") -> str:
    """A whole page: the head (its style, no scripts), the header, the navigation, ``body``.
    No timed refresh: a page that reloads itself moves the reader's focus and place."""
    return (
        "<!doctype html>"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<header><h1>{e(title)}</h1>{f'<p>{subtitle}</p>' if subtitle else ''}</header>"
        f"{nav}<main>{body}</main></body></html>"
    )


def render(
    status: dict[str, Any],
    history: Iterable[HistoryEntry] = (),
    *,
    nav: str = "",
    resource_link: Callable[[str], str] | None = None,
    notice: str = "",
) -> str:
    """The whole page for a status document (:func:`sync_core.admin.status.build_status`);
    in the console, with its navigation and each resource linked to its page."""
    now = parse_iso(status.get("generated_at")) or datetime.now(UTC)
    overall = str(status.get("state") or "ok")
    summary = status.get("summary") or {}
    counts = (
        f"{e(summary.get('mappings', 0))} mapping(s): "
        f'<span id="count-connected">{e(summary.get("connected", 0))}</span> connected, '
        f'<span id="count-failed">{e(summary.get("failed", 0))}</span> failed, '
        f'<span id="count-deactivated">{e(summary.get("deactivated", 0))}</span> deactivated'
    )
    body = (
        f"{notice}"
        f'<div class="banner {e(overall)}" id="overall">{e(BANNERS.get(overall, overall))}</div>'
        '<div class="cards">'
        f"{_credential_card(status.get('credential') or {}, now)}"
        f"{_work_card(status.get('work') or {})}"
        "</div>"
        f'<h2 id="mappings-title">Mappings</h2>{scroller("mappings-title")}'
        '<table id="mappings" aria-labelledby="mappings-title"><thead><tr><th>State</th>'
        "<th>Resource</th><th>Mailbox</th><th>Last success</th><th>Subscription until</th>"
        "<th>Pending</th><th>Parked</th></tr></thead><tbody>"
        f"{_mapping_rows(status.get('mappings') or [], now, resource_link)}</tbody></table></div>"
        f'<h2 id="history-title">Recent history</h2>{scroller("history-title")}'
        '<table id="history" aria-labelledby="history-title"><thead><tr><th>When</th>'
        "<th>Resource</th><th>What</th><th>Subject</th><th>Outcome</th><th>Detail</th></tr>"
        f"</thead><tbody>{_history_rows(history, now)}</tbody></table></div>"
    )
    subtitle = f"Generated {e(ago(status.get('generated_at'), now))}; reload for news. {counts}."
    return layout("Calendar sync status", body, nav=nav, subtitle=subtitle)
