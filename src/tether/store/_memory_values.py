"""What the memory store's parts share: values made to read back as the SQL store returns them
(every datetime aware and in UTC; a naive one is a ``ValueError`` before anything is written)."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

__all__ = ["as_utc", "in_utc"]

_Value = TypeVar("_Value")


def as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("naive datetime: the store takes aware UTC datetimes only")
    return moment.astimezone(UTC)


def in_utc(value: _Value) -> _Value:
    """``value`` (a dataclass) with every datetime field in UTC."""
    changes: dict[str, Any] = {
        f.name: as_utc(v)
        for f in fields(value)  # type: ignore[arg-type]
        if isinstance(v := getattr(value, f.name), datetime)
    }
    return replace(value, **changes)  # type: ignore[type-var]
