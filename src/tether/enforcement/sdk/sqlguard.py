"""What a SQL text would do, read before it is sent: the pure half of the SQL guard.

:func:`analyse` parses PostgreSQL text with `sqlglot <https://sqlglot.com>`_ — a complete,
maintained SQL parser with a PostgreSQL dialect, so the guard reads statements as a tree instead
of guessing from keywords, and ``parse`` (not ``parse_one``) so stacked statements
(``select 1; drop table orders``) are each seen. It answers, per statement, its kind and the
tables it touches as :class:`Access` pairs — *(action, table)* — which
:mod:`tether.enforcement.sdk.sql` turns into one checkpoint decision each. No I/O here; what
the checkpoint decides, and the database role's own privileges (always the hard boundary), are
decided elsewhere.

**Allowed** is an allow-list of statement classes (:data:`DEFAULT_KINDS`: ``select`` — with
set operations and ``VALUES`` —, ``insert``, ``update``, ``delete``, ``merge``). Everything
else raises :class:`~tether.errors.StatementDenied` with ``details["reason"]``: ``empty``,
``too_long``, ``parse_error``, ``opaque_command`` (what sqlglot only keeps as an opaque
``Command``: ``DO``, ``CALL``, ``EXPLAIN`` — ``EXPLAIN ANALYZE`` runs its statement —,
``PREPARE``/``EXECUTE``, ``SET ROLE``, ``RESET``, ``LOCK``, ``VACUUM`` …), ``copy_program`` and
``not_allowed`` (DDL, ``GRANT``, ``SET``, ``COPY``, ``TRUNCATE``, transaction control — the
driver owns transactions: ``conn.commit()``, ``conn.transaction()`` —, ``LISTEN``/``NOTIFY``
…), ``select_into`` (``SELECT … INTO`` creates a table), ``forbidden_function`` and
``catalog_qualified``.

**Forbidden functions** (:data:`FORBIDDEN_FUNCTIONS`, anywhere in the tree, any schema, any
case): those that reach outside the table model — server files (``pg_read_file``), large
objects (``lo_*``), other databases (``dblink*``), other sessions and the server
(``pg_terminate_backend``, ``pg_reload_conf``), session settings (``set_config``), sleeping
(``pg_sleep*``), logical decoding, and those that run a query given as a string or read a
table named by a value (``query_to_xml``, ``table_to_xml``, ``ts_stat`` …), which would smuggle
a read past the table check. In a name, ``*`` is any run of characters. :meth:`Rules.forbid` extends
the list; user-defined functions run under the role's privileges.

**Tables** are named as PostgreSQL resolves them: unquoted identifiers folded to lower case,
quoted ones kept (``"PaYroll"`` is a different table from ``payroll``), schema-qualified
(``public.orders``), a part quoted as ``quote_ident`` would where it is not a plain lower-case
name (``public."PaYroll"``), so no two tables share a name. Unqualified names are in
:attr:`Rules.default_schema`; an unqualified ``pg_*`` name is checked in ``pg_catalog`` too,
which PostgreSQL searches first. CTE names are not tables (scoped as PostgreSQL scopes them);
tables in subqueries, joins and CTE bodies are. Actions: a statement's target gets its verb
(``insert``, ``update``, ``delete``; a ``MERGE`` the verbs of its ``WHEN`` clauses, an
``INSERT … ON CONFLICT DO UPDATE`` also ``update``); every other table is ``select``; a
target with ``RETURNING`` is also ``select`` (its rows come back), and the tables of a
``SELECT … FOR UPDATE/SHARE`` also ``update`` (rows locked for writing). A data-modifying CTE
(``WITH d AS (DELETE FROM t RETURNING *) SELECT …``) is a ``delete`` on ``t``.

Example::

    >>> (statement,) = analyse("insert into orders select * from cart")
    >>> statement.kind, [(a.action, a.table) for a in statement.accesses]
    ('insert', [('insert', 'public.orders'), ('select', 'public.cart')])
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import NoReturn

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, SqlglotError
from sqlglot.tokenizer_core import Token, TokenType

from tether.errors import StatementDenied

__all__ = [
    "DEFAULT_KINDS",
    "DEFAULT_RULES",
    "FORBIDDEN_FUNCTIONS",
    "MAX_CHARS",
    "Access",
    "Rules",
    "Statement",
    "analyse",
]

#: The statement classes a guarded connection runs (a :class:`Rules` may narrow them).
DEFAULT_KINDS = frozenset({"select", "insert", "update", "delete", "merge"})
#: Longer SQL texts are refused (the statement text travels to the checkpoint).
MAX_CHARS = 32 * 1024
#: Functions no guarded statement may call (lower case; ``*`` is any run of characters).
FORBIDDEN_FUNCTIONS = frozenset(
    {
        # the server's files and programs
        "pg_read_file", "pg_read_binary_file", "pg_stat_file", "pg_ls_*", "pg_file_*",
        "pg_logdir_ls",
        # large objects: server files (lo_import, lo_export) and data outside the tables
        "lo_*", "loread", "lowrite",
        # other databases and servers
        "dblink*", "postgres_fdw_*",
        # other sessions, the server itself, replication and logical decoding
        "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
        "pg_promote", "pg_switch_wal", "pg_create_restore_point", "pg_backup_*",
        "pg_start_backup", "pg_stop_backup", "pg_logical_*", "pg_replication_*",
        "pg_create_*_replication_slot", "pg_drop_replication_slot", "pg_copy_*_slot",
        "pg_import_system_collations", "pg_stat_reset*",
        # session state the guard relies on (search_path) and notifications
        "set_config", "pg_notify",
        # denial of service
        "pg_sleep*",
        # a query in a string, or a table named by a value: a read the table check cannot see
        "query_to_xml*", "cursor_to_xml*", "table_to_xml*", "schema_to_xml*",
        "database_to_xml*", "ts_stat", "query_to_json*",
    }
)  # fmt: skip

_KINDS: tuple[tuple[type[exp.Expr], str], ...] = (
    (exp.Query, "select"),  # SELECT, UNION/INTERSECT/EXCEPT, a parenthesised query
    (exp.Values, "select"),
    (exp.Insert, "insert"),
    (exp.Update, "update"),
    (exp.Delete, "delete"),
    (exp.Merge, "merge"),
)
#: Classes denied wherever they appear in a tree (a statement's own class is checked first).
_NEVER: tuple[type[exp.Expr], ...] = (
    exp.Command, exp.Copy, exp.DDL, exp.Drop, exp.Alter, exp.Set, exp.Transaction, exp.Commit,
    exp.Rollback, exp.Grant, exp.Revoke, exp.TruncateTable, exp.Analyze, exp.Comment, exp.Use,
    exp.Describe, exp.Pragma, exp.Cache, exp.Uncache, exp.Refresh, exp.Kill, exp.Show,
    exp.LoadData,
)  # fmt: skip
_WRITES = (exp.Insert, exp.Update, exp.Delete, exp.Merge)
_POSTGRES = Dialect.get_or_raise("postgres")
#: Control characters but tab, newline and carriage return; spaces other than the ASCII one.
_ODD = re.compile(r"[^\S \t\n\r]|[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f]")
_PLAIN = re.compile(r"[a-z_][a-z0-9_$]*\Z")


@dataclass(frozen=True, kw_only=True)
class Rules:
    """What a guarded connection lets through; built once, passed in."""

    kinds: frozenset[str] = DEFAULT_KINDS
    forbidden_functions: frozenset[str] = FORBIDDEN_FUNCTIONS
    #: Where unqualified tables are (the first schema of the session's ``search_path``).
    default_schema: str = "public"
    max_chars: int = MAX_CHARS
    _exact: frozenset[str] = field(init=False, repr=False, compare=False)
    _patterns: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = {n.lower() for n in self.forbidden_functions}
        wild = sorted(n for n in names if "*" in n)
        # One expression for every pattern (``*``: any run of characters), matched whole.
        alternatives = "|".join(".*".join(map(re.escape, n.split("*"))) for n in wild)
        object.__setattr__(self, "_exact", frozenset(n for n in names if "*" not in n))
        object.__setattr__(self, "_patterns", re.compile(f"(?:{alternatives or '(?!)'})\\Z"))

    def forbid(self, *names: str) -> Rules:
        """These rules, with more forbidden functions (``*`` is any run of characters)."""
        return replace(self, forbidden_functions=self.forbidden_functions | set(names))

    def forbids(self, function: str) -> bool:
        name = function.lower()
        return name in self._exact or self._patterns.match(name) is not None


DEFAULT_RULES = Rules()


@dataclass(frozen=True, order=True)
class Access:
    """One thing a statement does to one table: what the checkpoint decides on."""

    action: str
    table: str


@dataclass(frozen=True, kw_only=True)
class Statement:
    kind: str
    #: The statement's text: the whole input when it holds one statement, else its own part
    #: of the input (from its first token to its last).
    sql: str
    accesses: tuple[Access, ...]

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(sorted({a.table for a in self.accesses}))


def analyse(sql: str, *, rules: Rules = DEFAULT_RULES) -> tuple[Statement, ...]:
    """Every statement of ``sql`` with the tables it touches; the first refused one raises
    :class:`~tether.errors.StatementDenied` (so nothing of a stacked text runs)."""
    if len(sql) > rules.max_chars:
        _deny("too_long", f"the SQL is longer than {rules.max_chars} characters")
    odd = _ODD.search(sql)
    if odd is not None:
        # PostgreSQL and sqlglot part ways on these (a no-break space is whitespace to one and
        # part of a name to the other): refused rather than guessed.
        _deny("parse_error", f"the SQL holds the character U+{ord(odd.group()):04X}")
    parsed = _parse(sql)
    if not parsed:
        _deny("empty", "there is no statement to run")
    if len(parsed) == 1:  # the whole text is what runs
        return (_statement(parsed[0][0], sql.strip(), rules),)
    return tuple(_statement(tree, text, rules) for tree, text in parsed)


def _parse(sql: str) -> list[tuple[exp.Expr, str]]:
    """Each statement's tree and its own text: the tokens are split at each ``;`` as sqlglot
    splits them, and each part is parsed alone."""
    try:
        tokens = _POSTGRES.tokenize(sql)
        # error_message_context=0: sqlglot's messages and log lines do not repeat the SQL.
        parser = _POSTGRES.parser(error_message_context=0)
        parsed = []
        for chunk in _chunks(tokens):
            text = sql[chunk[0].start : chunk[-1].end + 1]
            parsed += [(tree, text) for tree in parser.parse(chunk, sql) if tree is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        where = f" (line {first.get('line')}, column {first.get('col')})" if first else ""
        why = str(first.get("description", "invalid syntax"))
        _deny("parse_error", f"the SQL does not parse: {why}{where}")
    except SqlglotError:
        _deny("parse_error", "the SQL does not parse: it does not tokenize")
    except RecursionError:
        _deny("parse_error", "the SQL does not parse: nested too deeply")
    except (TypeError, ValueError, AttributeError, IndexError, KeyError):
        # sqlglot's own faults on odd input (``0?`` makes its compiled parser build a JSONB
        # operator from nothing): whatever sqlglot cannot read is not run.
        _deny("parse_error", "the SQL does not parse: the parser failed on it")
    return parsed


def _chunks(tokens: list[Token]) -> Iterator[list[Token]]:
    chunk: list[Token] = []
    for token in tokens:
        if token.token_type is TokenType.SEMICOLON:
            if chunk:
                yield chunk
            chunk = []
        else:
            chunk.append(token)
    if chunk:
        yield chunk


def _statement(tree: exp.Expr, text: str, rules: Rules) -> Statement:
    kind = _kind(tree)
    if kind not in rules.kinds:
        _deny("not_allowed", f"{kind} statements are not allowed", statement=kind)
    tables, writes = _refuse_nodes(tree, rules)
    accesses = tuple(sorted(_accesses(tables, writes, rules)))
    for access in accesses:
        if access.action not in rules.kinds:
            _deny("not_allowed", f"{access.action} is not allowed (on {access.table})",
                  statement=access.action)  # fmt: skip
    return Statement(kind=kind, sql=text, accesses=accesses)


def _kind(tree: exp.Expr) -> str:
    if isinstance(tree, exp.Command):
        keyword = str(tree.this or "").split(maxsplit=1)[0].upper() if tree.this else "?"
        _deny("opaque_command", f"{keyword} is not a statement the guard can read",
              statement=keyword.lower())  # fmt: skip
    if isinstance(tree, exp.Copy):
        if _copies_program(tree):
            _deny("copy_program", "COPY … PROGRAM runs a program on the server",
                  statement="copy")  # fmt: skip
        _deny("not_allowed", "copy statements are not allowed", statement="copy")
    for cls, kind in _KINDS:
        if isinstance(tree, cls):
            return kind
    # A statement sqlglot knows (DDL, SET, GRANT …) by its class; anything else it read as an
    # expression (``LISTEN x`` as a column alias) is no statement of the allow-list.
    return type(tree).__name__.lower() if isinstance(tree, _NEVER) else "unrecognised"


def _copies_program(copy: exp.Copy) -> bool:
    files = copy.args.get("files") or []
    return any(isinstance(f, exp.Identifier) and f.name.lower() == "program" for f in files)


def _refuse_nodes(tree: exp.Expr, rules: Rules) -> tuple[list[exp.Table], list[exp.Expr]]:
    """One walk: refuse what may appear nowhere — a statement the allow-list would refuse,
    ``INTO``, a forbidden function, another database — and collect the tables and the
    data-modifying statements."""
    tables: list[exp.Table] = []
    writes: list[exp.Expr] = []
    for node in tree.walk():
        if isinstance(node, exp.Table):
            if node.args.get("catalog") is not None:
                _deny("catalog_qualified", "a table named with its database is not allowed")
            tables.append(node)
        elif isinstance(node, exp.Func):
            for name in _function_names(node):
                if rules.forbids(name):
                    _deny("forbidden_function", f"the function {name} is forbidden",
                          function=name)  # fmt: skip
        elif isinstance(node, _WRITES):
            writes.append(node)
        elif isinstance(node, exp.Into):
            _deny("select_into", "SELECT … INTO creates a table", statement="select_into")
        elif isinstance(node, _NEVER):
            _kind(node)  # a Command or COPY raises its own reason
            kind = type(node).__name__.lower()
            _deny("not_allowed", f"{kind} is not allowed inside a statement", statement=kind)
    return tables, writes


def _function_names(node: exp.Func) -> Iterator[str]:
    if isinstance(node, exp.Anonymous):
        this = node.this
        yield (this.name if isinstance(this, exp.Identifier) else str(this)).lower()
        return
    yield node.key.lower()
    for name in type(node).sql_names():
        yield name.lower()


def _accesses(tables: list[exp.Table], writes: list[exp.Expr], rules: Rules) -> set[Access]:
    targets: dict[int, tuple[str, ...]] = {}
    for node in writes:
        target = _target(node)
        if target is not None:
            targets[id(target)] = _target_actions(node)
    out: set[Access] = set()
    for table in tables:
        names = _relation(table, rules)
        if not names:
            continue
        actions = targets.get(id(table), ("select",))
        if id(table) not in targets and _locked(table):
            actions = ("select", "update")
        out.update(Access(action=a, table=n) for a in actions for n in names)
    return out


def _target(node: exp.Expr) -> exp.Table | None:
    this = node.this
    if isinstance(this, exp.Schema):  # INSERT INTO t (columns)
        this = this.this
    return this if isinstance(this, exp.Table) else None


def _target_actions(node: exp.Expr) -> tuple[str, ...]:
    actions: set[str] = set()
    if isinstance(node, exp.Insert):
        actions.add("insert")
        conflict = node.args.get("conflict")
        if conflict is not None and "UPDATE" in str(conflict.args.get("action", "")).upper():
            actions.add("update")
    elif isinstance(node, exp.Update):
        actions.add("update")
    elif isinstance(node, exp.Delete):
        actions.add("delete")
    else:
        actions |= _merge_actions(node)
    if node.args.get("returning") is not None:
        actions.add("select")
    return tuple(sorted(actions))


def _merge_actions(merge: exp.Expr) -> set[str]:
    actions: set[str] = set()
    for when in merge.find_all(exp.When):
        then = when.args.get("then")
        if isinstance(then, exp.Insert):
            actions.add("insert")
        elif isinstance(then, exp.Update):
            actions.add("update")
        elif "DELETE" in str(then).upper():
            actions.add("delete")
    return actions


def _locked(table: exp.Table) -> bool:
    """Is ``table`` read by a ``SELECT … FOR UPDATE/SHARE`` (at any level above it)?"""
    return any(isinstance(n, exp.Select) and n.args.get("locks") for n in _ancestors(table))


def _relation(table: exp.Table, rules: Rules) -> tuple[str, ...]:
    """The names a ``Table`` node can resolve to: none for a function in ``FROM``, a CTE, a
    ``FOR UPDATE OF`` reference or ``ROWS FROM``."""
    this = table.this
    if not isinstance(this, exp.Identifier):
        return ()
    if any(isinstance(n, exp.Lock) for n in _ancestors(table)):
        return ()  # FOR UPDATE OF names a FROM item, already counted
    name = _folded(this)
    schema = table.args.get("db")
    if isinstance(schema, exp.Identifier):
        return (_qualified(_folded(schema), name),)
    if _is_cte(table, name):
        return ()
    names: tuple[str, ...] = (_qualified(rules.default_schema, name),)
    if name.startswith("pg_"):  # pg_catalog is searched before the search_path
        names = (_qualified("pg_catalog", name), *names)
    return names


def _is_cte(table: exp.Table, name: str) -> bool:
    """Does ``name`` resolve to a CTE in scope at ``table``? Walking out: a query's ``WITH``
    is visible from its body; from inside the body of its CTE number i, only the CTEs before
    i (and i itself under ``WITH RECURSIVE``). Anything unsure counts as a table."""
    below: list[exp.Expr] = [table]  # the path walked so far, innermost first
    for node in _ancestors(table):
        with_ = node.args.get("with_")
        if isinstance(with_, exp.With) and name in _visible_ctes(with_, below):
            return True
        below.append(node)
    return False


def _visible_ctes(with_: exp.With, below: list[exp.Expr]) -> set[str]:
    ctes = list(with_.expressions)
    names = [_folded(c.args["alias"].this) if c.args.get("alias") else "" for c in ctes]
    if below[-1] is not with_:
        return set(names)  # from the query's body
    inner = next((i for i, c in enumerate(ctes) if len(below) > 1 and c is below[-2]), None)
    if inner is None:
        return set()
    return set(names[: inner + 1 if with_.args.get("recursive") else inner])


def _ancestors(node: exp.Expr) -> Iterator[exp.Expr]:
    parent = node.parent
    while parent is not None:
        yield parent
        parent = parent.parent


def _folded(identifier: exp.Expr) -> str:
    """An identifier as PostgreSQL reads it: unquoted is folded to lower case."""
    name = identifier.name if isinstance(identifier, exp.Identifier) else str(identifier)
    quoted = isinstance(identifier, exp.Identifier) and identifier.args.get("quoted")
    return name if quoted else name.lower()


def _qualified(schema: str, name: str) -> str:
    return f"{_ident(schema)}.{_ident(name)}"


def _ident(part: str) -> str:
    """A name part as ``quote_ident`` writes it where it is not plain: no two differ only by
    a dot or a quote."""
    return part if _PLAIN.match(part) else '"' + part.replace('"', '""') + '"'


def _deny(reason: str, message: str, **details: str) -> NoReturn:
    raise StatementDenied(message, details={"reason": reason, **details})
