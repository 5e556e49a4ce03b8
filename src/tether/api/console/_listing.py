"""Reading every page of a service's listing (paged by ``after``, the last item's key), up to a
bound: what the console counts and sorts itself, since the stores page by id, not by time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["read_all"]

T = TypeVar("T")


async def read_all(
    fetch: Callable[[str | None], Awaitable[list[T]]],
    key: Callable[[T], str],
    *,
    page: int,
    bound: int,
) -> tuple[list[T], bool]:
    """Every item ``fetch`` pages out (``page`` at a time), up to ``bound``, and whether it
    stopped at the bound. A listing the service filters after paging (alerts, for a
    developer) may end early: it is then over the newest pages."""
    found: list[T] = []
    after: str | None = None
    while len(found) < bound:
        batch = await fetch(after)
        found += batch
        if len(batch) < page:
            return found, False
        after = key(batch[-1])
    return found[:bound], True
