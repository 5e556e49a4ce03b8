"""Tether: a runtime security control plane for AI agents.

Every action an agent takes is tethered — to a registered agent identity and its running
instance, to the person it acts for, to a purpose and a session, and to the policy that allowed
it — and written to a log no one can quietly rewrite.

The SDK an agent uses lives here: :class:`Client` and :class:`AsyncClient` (its own token,
decisions, token exchange, approvals, leases) and :func:`guard` for tool functions; the SQL
guard is :mod:`tether.sql`. They are loaded on first use, so ``import tether`` stays cheap
for the server and the CLI.

Example::

    >>> import tether
    >>> tether.__version__
    '0.1.0.dev0'
    >>> tether.Client.__name__
    'Client'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tether.errors import ApprovalRequired, CheckUnavailable, Denied, Error, StatementDenied

if TYPE_CHECKING:
    from tether.enforcement.sdk import (
        AsyncClient,
        Client,
        Decision,
        Lease,
        current_async_client,
        current_client,
        guard,
    )

__all__ = [
    "ApprovalRequired",
    "AsyncClient",
    "CheckUnavailable",
    "Client",
    "Decision",
    "Denied",
    "Error",
    "Lease",
    "StatementDenied",
    "__version__",
    "current_async_client",
    "current_client",
    "guard",
]

__version__ = "0.1.0.dev0"

_SDK = frozenset(
    {"AsyncClient", "Client", "Decision", "Lease", "current_async_client", "current_client",
     "guard"}
)  # fmt: skip


def __getattr__(name: str) -> Any:
    """The SDK's names, imported when first asked for (PEP 562)."""
    if name in _SDK:
        from tether.enforcement import sdk  # noqa: PLC0415 - lazy on purpose

        value = getattr(sdk, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tether' has no attribute {name!r}")
