"""Tether: a runtime security control plane for AI agents.

Every action an agent takes is tethered — to a registered agent identity and its running
instance, to the person it acts for, to a purpose and a session, and to the policy that allowed
it — and written to a log no one can quietly rewrite.

Example::

    >>> import tether
    >>> tether.__version__
    '0.1.0.dev0'
"""

from tether.errors import Error

__all__ = ["Error", "__version__"]

__version__ = "0.1.0.dev0"
