"""The problems an admin sees when Graph or Entra refuses what an operation needed: the mailbox
(422) or the app and Graph (502), each with Graph's code and a hint."""

from __future__ import annotations

from typing import Any

from sync_core.graph import ErrorKind, GraphError
from sync_core.problems import (
    FieldError,
    Problem,
)

# Graph errors that are about the mailbox itself (SPEC §5): the admin fixes the mapping or the
# mailbox. Everything else (credential, permission, network) is a problem of the app or Graph.
MAILBOX_KINDS = frozenset(
    {ErrorKind.MAILBOX_UNKNOWN, ErrorKind.MAILBOX_NOT_ENABLED, ErrorKind.ACCESS_DENIED}
)


class GraphProblem(Problem):
    """Graph or Entra refused what the operation needed (credential, permission, outage).

    Extension members: ``code`` (Graph's or Entra's error code) and ``hint`` (what to do)."""

    status, title, slug = 502, "Microsoft 365 refused the request", "graph-error"

    def __init__(self, error: dict[str, Any], detail: str | None = None) -> None:
        super().__init__(detail or str(error.get("message") or "Graph refused the request"))
        self.error = error

    @property
    def code(self) -> str:
        return str(self.error.get("code") or "")

    @property
    def hint(self) -> str:
        return str(self.error.get("hint") or "")

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "code": self.code, "hint": self.hint}


class MailboxUnreachable(GraphProblem):
    """The mailbox of a mapping does not exist, is not in Exchange Online, or is out of scope."""

    status, title, slug = 422, "The mailbox cannot be used", "mailbox-unreachable"

    def __init__(self, error: dict[str, Any], mailbox: str) -> None:
        super().__init__(error)
        self.mailbox = mailbox
        self.errors = [FieldError("mailbox", str(error.get("message") or ""))]

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "mailbox": self.mailbox}


def problem_for(error: GraphError, mailbox: str | None = None) -> GraphProblem:
    """The problem an admin sees for a Graph error: 422 for the mailbox, 502 for the rest."""
    if mailbox is not None and error.kind in MAILBOX_KINDS:
        return MailboxUnreachable(error.to_json(), mailbox)
    return GraphProblem(error.to_json())
