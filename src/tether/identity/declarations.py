"""Validation of an agent's declared capabilities (what the risk assessment reads).

Tool and resource names are short, printable identifiers (``search_faq``, ``postgres:faq/*``);
lists are de-duplicated and sorted so that equal declarations compare equal.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from tether.errors import InvalidDeclaration
from tether.identity.models import DataClass, Declarations

__all__ = ["MAX_ENTRIES", "check_declarations"]

MAX_ENTRIES = 256
_ENTRY = re.compile(r"^[A-Za-z0-9_.:/*@+=-]{1,200}$")
_ENTRY_RULE = "1 to 200 characters: letters, digits and _ . : / * @ + = -"


def _entries(field: str, values: tuple[str, ...]) -> tuple[str, ...]:
    if len(values) > MAX_ENTRIES:
        raise InvalidDeclaration(
            f"at most {MAX_ENTRIES} {field}",
            details={"field": field, "rule": f"at most {MAX_ENTRIES} entries"},
        )
    for value in values:
        if not isinstance(value, str) or not _ENTRY.fullmatch(value):
            raise InvalidDeclaration(
                f"{field} entries must be {_ENTRY_RULE}",
                details={"field": field, "rule": _ENTRY_RULE},
            )
    return tuple(sorted(set(values)))


def check_declarations(d: Declarations) -> Declarations:
    if not d.data_classes:
        raise InvalidDeclaration(
            "declare at least one data class (public, internal, confidential, restricted)",
            details={"field": "data_classes", "rule": "at least one data class"},
        )
    order = list(DataClass)
    return Declarations(
        tools=_entries("tools", d.tools),
        resources=_entries("resources", d.resources),
        data_classes=tuple(sorted(set(d.data_classes), key=order.index)),
        external_connections=d.external_connections,
        autonomy=d.autonomy,
        may_call_agents=bool(d.may_call_agents),
        notification_endpoint=_endpoint(d.notification_endpoint),
    )


_ENDPOINT_RULE = "an https URL (http only to a loopback address), without credentials or fragment"


def _endpoint(url: str | None) -> str | None:
    """A notification endpoint Tether may POST to: https (http only to loopback, for
    development), at most 2,000 characters, no user information, no fragment."""
    if url is None:
        return None
    if not _postable(url):
        raise InvalidDeclaration(
            f"notification_endpoint is {_ENDPOINT_RULE}",
            details={"field": "notification_endpoint", "rule": _ENDPOINT_RULE},
        )
    return url


def _postable(url: str) -> bool:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return False
    if not host or len(url) > 2000 or parts.username is not None or parts.fragment:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and _loopback(host))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
