"""The error of a credential that could not be loaded (Key Vault, certificate, managed identity)."""

from __future__ import annotations

from dataclasses import dataclass

from sync_core.graph.errors import GraphError


@dataclass(eq=False)
class CredentialError(GraphError):
    """A credential could not be loaded (Key Vault, certificate, managed identity).

    A :class:`GraphError`, so every caller of the Graph client handles it as it handles a refused
    login: ``kind`` says whether retrying helps, ``to_json()`` gives code, message and hint.
    """

    problem: str = ""
    fix: str = ""

    @property
    def message(self) -> str:
        return self.problem or super().message

    @property
    def hint(self) -> str:
        return self.fix or super().hint


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (for ``detail``: never a secret, never a trace)."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
