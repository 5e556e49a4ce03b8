"""How the server logs: one JSON object per line on standard error, never a secret.

Each line is an object with ``event``, ``level``, ``timestamp`` (ISO 8601, UTC), the event's
own fields and, for a failure, ``exception``. Lines logged while a request is served also
carry its ``correlation_id``: :class:`~tether.api.middleware.CorrelationId` binds it in
structlog's context variables, which :func:`~structlog.contextvars.merge_contextvars` (the
first processor below) adds to every line (see docs/monitoring.md).

structlog's default (a development console) renders an exception's traceback with every
frame's local variables — which, in a frame that opened a credential engine or created a
credential, would be an admin password or an issued one. The server's logs therefore render
tracebacks as data without locals.

Example::

    configure_logging()
    structlog.get_logger("tether").warning("store_unavailable", path="/v1/agents")
"""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.tracebacks import ExceptionDictTransformer

__all__ = ["configure_logging"]


def _stderr(*_args: object) -> structlog.PrintLogger:
    """A logger on the standard error of the moment (not of when logging was configured)."""
    return structlog.PrintLogger(sys.stderr)


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr, with the time (UTC), the level and, for an exception, its
    frames — file, line and function, no local variables."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_stderr,
        cache_logger_on_first_use=False,  # tests reconfigure structlog: never stale
    )
