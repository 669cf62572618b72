"""Releasing a service's clients in order, every one of them even when one fails."""

from __future__ import annotations

from collections.abc import Callable


def close_all(*closes: Callable[[], None]) -> None:
    """Call each in turn; the first error is raised once all have been called."""
    error: BaseException | None = None
    for close in closes:
        try:
            close()
        except BaseException as exc:  # the others must still release their threads
            error = error or exc
    if error is not None:
        raise error
