"""What the SQL guard's analysis makes of a text, for its tests: the (action, table) pairs it
would ask about, or the refusal it raises."""

from __future__ import annotations

import pytest

from tether.enforcement.sdk.sqlguard import DEFAULT_RULES, Rules, analyse
from tether.errors import StatementDenied


def accesses(sql: str, rules: Rules = DEFAULT_RULES) -> set[tuple[str, str]]:
    return {(a.action, a.table) for s in analyse(sql, rules=rules) for a in s.accesses}


def refused(sql: str, rules: Rules = DEFAULT_RULES) -> StatementDenied:
    with pytest.raises(StatementDenied) as caught:
        analyse(sql, rules=rules)
    assert caught.value.code == "statement_denied"
    return caught.value


def reason(sql: str, rules: Rules = DEFAULT_RULES) -> str:
    return str(refused(sql, rules).details["reason"])
