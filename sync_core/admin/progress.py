"""How long admin operations (purge, resync, catch-up) report progress: the CLI prints it, the
HTTP API ignores it."""

from collections.abc import Callable

Progress = Callable[[str, int, int], None]  # (step, done, total)


def no_progress(step: str, done: int, total: int) -> None:
    """The API's progress callback: nobody watches."""
