"""Exit codes of the ``tether`` command (stable; documented in docs/cli.md).

=====  ==========================================================
code   meaning
=====  ==========================================================
0      success
1      an unexpected error (a server error, a bug)
2      usage error: unknown command or bad option (typer)
3      invalid input: the server refused a value (the rule is printed)
4      not found
5      conflict: already exists, wrong state, changed meanwhile
6      not authenticated or not allowed (check TETHER_TOKEN and its role)
7      the server cannot be reached or is not ready (check TETHER_ADDR)
8      verification failed: an audit log or proof bundle does not prove what it claims
=====  ==========================================================
"""

from __future__ import annotations

OK = 0
ERROR = 1
USAGE = 2
INVALID_INPUT = 3
NOT_FOUND = 4
CONFLICT = 5
AUTH = 6
UNAVAILABLE = 7
NOT_PROVEN = 8

BY_STATUS = {
    400: INVALID_INPUT,
    413: INVALID_INPUT,
    401: AUTH,
    403: AUTH,
    404: NOT_FOUND,
    409: CONFLICT,
    503: UNAVAILABLE,
}

REMEDY = {
    INVALID_INPUT: "fix the value named above and try again",
    NOT_FOUND: "check the name: `tether agent list` shows what exists",
    CONFLICT: "the object exists or is in another state: `tether agent show NAME`",
    AUTH: "set TETHER_TOKEN to a token with the right role (`tether token create`)",
    UNAVAILABLE: "start the server (`tether serve --dev`) or set TETHER_ADDR",
    NOT_PROVEN: "the first bad index is named above; compare with a witness or a backup",
}
