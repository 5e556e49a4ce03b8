"""The values of a route map: services, routes, their path templates and resources, and what
a request matched (see :mod:`tether.enforcement.http.routes`).

Example::

    >>> template = ResourceTemplate(type="Table", id="orders/{id}", parent="shop")
    >>> template.entity({"id": "42"}).ref
    EntityRef(type='Table', id='orders/42')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tether.enforcement.http.paths import Target
from tether.policy.models import Entity, EntityRef

__all__ = [
    "LITERAL",
    "PARAM",
    "SERVICE_NAME",
    "TAIL",
    "Match",
    "ResourceTemplate",
    "Route",
    "Segment",
    "Service",
]

#: A service's name: what follows ``/v1/ext_authz/``.
SERVICE_NAME = re.compile(r"[a-z][a-z0-9-]{0,61}[a-z0-9]")
#: Segment kinds, most specific first.
LITERAL, PARAM, TAIL = 0, 1, 2
_PLACE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


@dataclass(frozen=True)
class Segment:
    """One segment of a path template: a literal, ``{name}`` or ``{name:path}``."""

    kind: int
    value: str  # the literal, or the parameter's name


@dataclass(frozen=True)
class ResourceTemplate:
    """The resource a route names; ``{name}`` in ``id`` (and ``parent``) is a parameter."""

    type: str
    id: str
    data_class: str = "internal"
    #: The ``Database`` a ``Table`` is in.
    parent: str | None = None

    def entity(self, params: Mapping[str, str]) -> Entity:
        ident = _fill(self.id, params)
        parents = (EntityRef("Database", _fill(self.parent, params)),) if self.parent else ()
        attrs = {"name": ident, "data_class": self.data_class}
        return Entity(ref=EntityRef(self.type, ident), attrs=attrs, parents=parents)


@dataclass(frozen=True)
class Route:
    methods: frozenset[str] | None  # None: any method
    template: str
    segments: tuple[Segment, ...]
    action: str
    resource: ResourceTemplate

    def bind(self, method: str, target: Target) -> dict[str, str] | None:
        """The path's parameters if this route takes ``method`` on ``target``, else None."""
        if self.methods is not None and method not in self.methods:
            return None
        params: dict[str, str] = {}
        path = target.segments
        for i, segment in enumerate(self.segments):
            if segment.kind == TAIL:
                rest = path[i:]
                if not rest or "" in rest:
                    return None
                return params | {segment.value: "/".join(rest)}
            if i >= len(path) or not _takes(segment, path[i]):
                return None
            if segment.kind == PARAM:
                params[segment.value] = path[i]
        return params if len(path) == len(self.segments) else None

    @property
    def rank(self) -> tuple[tuple[int, ...], int]:
        """Lower is more specific: segment kinds from the left, then a named method."""
        return tuple(s.kind for s in self.segments), int(self.methods is None)


@dataclass(frozen=True)
class Service:
    name: str
    routes: tuple[Route, ...]
    #: The ``aud`` its agents' tokens carry; None: Tether's issuer.
    audience: str | None = None


@dataclass(frozen=True)
class Match:
    """What a request is, in Tether's terms."""

    route: Route
    action: str
    resource: Entity
    params: Mapping[str, str]
    arguments: Mapping[str, Any]


def _takes(segment: Segment, value: str) -> bool:
    """Whether one segment of a template takes one decoded segment of a path."""
    return value == segment.value if segment.kind == LITERAL else value != ""


def _fill(template: str, params: Mapping[str, str]) -> str:
    """``template`` with each ``{name}`` replaced by its parameter (validated at load)."""
    return _PLACE.sub(lambda m: params[m.group(1)], template)
