"""Request targets read once, strictly: what path an HTTP request names, or a refusal.

A proxy, Tether and the upstream application each parse the path of a request. Where two of
them could read one path differently, an attacker gets to choose: Tether decides on one route
while the upstream serves another (``/public/..;/admin`` read as ``/admin`` by a Java server,
``/orders%2F..%2Fadmin`` decoded twice, ``/a//b`` merged into ``/a/b``). So the path is
percent-decoded exactly once, segment by segment (RFC 3986 §2.1, §3.3), and anything that
another parser might read as a different path is refused with ``UnsafePath`` (HTTP 400) rather
than normalised by a guess:

* a target that is not origin-form (RFC 9112 §3.2.1: it starts with ``/``), or holds a
  fragment, or is longer than :data:`MAX_TARGET` characters or :data:`MAX_SEGMENTS` segments;
* raw characters outside RFC 3986 ``pchar`` (spaces, ``\\``, quotes, controls, non-ASCII);
* a malformed escape (``%zz``, a lone ``%``), or escapes that do not decode as UTF-8;
* a segment that is, once decoded, ``.`` or ``..`` — also before a ``;`` parameter
  (``..;``) — or holds a ``/``, a ``\\``, a ``%`` (double encoding) or a control character;
* an empty segment (``//``) anywhere but at the very end (a trailing ``/`` is kept: ``/a/``
  and ``/a`` are different paths, and no route matches the one it does not name).

The query string is never matched; it is handed on as it came.

Example::

    >>> parse_target("/orders/a%20b?x=1")
    Target(segments=('orders', 'a b'), query='x=1')
    >>> parse_target("/orders/%2e%2e/admin")
    Traceback (most recent call last):
    ...
    tether.errors.UnsafePath: a path segment may not be '.' or '..'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tether.errors import UnsafePath

__all__ = ["MAX_SEGMENTS", "MAX_TARGET", "Target", "parse_target"]

#: The longest request target (path and query) read, in characters.
MAX_TARGET = 4096
#: The most path segments read.
MAX_SEGMENTS = 64
#: RFC 3986 ``pchar`` (unreserved, sub-delims, ``:``, ``@``) and ``%`` escapes, raw.
_PCHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%]*")
_QUERY_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%/?]*")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DOTS = frozenset({".", ".."})


@dataclass(frozen=True)
class Target:
    """A request target: its path as decoded segments (``/`` is no segment at all) and its
    raw query (``""`` when there is none)."""

    segments: tuple[str, ...]
    query: str = ""

    @property
    def path(self) -> str:
        """The decoded path, segments joined by ``/``."""
        return "/" + "/".join(self.segments)


def parse_target(target: str) -> Target:
    """The path and query of an origin-form request target, or ``UnsafePath``."""
    if len(target) > MAX_TARGET:
        raise UnsafePath(f"the request target is longer than {MAX_TARGET} characters")
    if not target.startswith("/"):
        raise UnsafePath("the request target is a path starting with '/'")
    if "#" in target:
        raise UnsafePath("a request target carries no fragment")
    path, _, query = target.partition("?")
    if not _QUERY_CHARS.fullmatch(query) or _BAD_ESCAPE.search(query):
        raise UnsafePath("the query holds characters a URL may not hold raw, or a bad escape")
    raw = path[1:].split("/") if path != "/" else []
    if len(raw) > MAX_SEGMENTS:
        raise UnsafePath(f"the path has more than {MAX_SEGMENTS} segments")
    last = len(raw) - 1
    segments = tuple(_segment(part, trailing=i == last and i > 0) for i, part in enumerate(raw))
    return Target(segments=segments, query=query)


def _segment(raw: str, *, trailing: bool) -> str:
    """One segment decoded once, or ``UnsafePath`` if another parser could read it as
    something else."""
    if raw == "":
        if trailing:
            return ""
        raise UnsafePath("a path may not hold an empty segment ('//')")
    if not _PCHARS.fullmatch(raw):
        raise UnsafePath("the path holds characters a URL may not hold raw")
    if _BAD_ESCAPE.search(raw):
        raise UnsafePath("the path holds a malformed percent escape")
    decoded = _decode(raw)
    if decoded in _DOTS or decoded.split(";", 1)[0] in _DOTS:
        raise UnsafePath("a path segment may not be '.' or '..'")
    if any(c in decoded for c in "/\\%") or not decoded.isprintable():
        raise UnsafePath(
            "a path segment may not hold an encoded '/', '\\', '%' (double encoding) or a "
            "control character"
        )
    return decoded


def _decode(raw: str) -> str:
    """``raw`` with its ``%XX`` escapes decoded once, as UTF-8 (strict)."""
    if "%" not in raw:
        return raw
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == "%":
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.extend(raw[i].encode("ascii"))
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafePath("the path's escapes do not decode as UTF-8") from None
