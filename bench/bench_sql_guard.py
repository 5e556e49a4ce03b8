"""The SQL guard's analysis per statement: :func:`tether.sql.analyse` on typical queries.

What a guarded ``execute`` adds before the checkpoint is asked: parsing the text (sqlglot,
PostgreSQL dialect), refusing what is not allowed and naming the tables with their actions.
The queries: a primary-key select, a join with a filter and an order, an insert with
parameters (``ON CONFLICT … RETURNING``), a CTE with an aggregate and a subquery, and a
stacked text of three statements (reported per statement). Each is analysed ``N`` times per
round; the figure is the median over ``ROUNDS`` rounds of the mean per call, and the worst
round's mean beside it. The check itself (one HTTP round trip to the checkpoint per table) is
measured by ``bench_sdk_guard.py``, not here.

Whether sqlglot runs compiled (its ``c`` extra, ``sqlglotc``, which the ``sql`` extra installs)
is printed: run it again in an environment with plain ``sqlglot`` to compare. The issue's aim
(issue 9): analysis <= 1 ms per statement for typical queries.

Run: ``make bench`` or ``.venv/bin/python bench/bench_sql_guard.py [N]`` (N = 2,000).
"""

from __future__ import annotations

import platform
import statistics
import sys
import time

from sqlglot import tokens

import _report
from tether.sql import analyse

ROUNDS = 7
AIM_US = 1000.0
QUERIES = {
    "select by key": "select id, total, status from orders where id = $1",
    "join + where": (
        "select o.id, o.total, c.name from orders o join customers c on c.id = o.customer_id "
        "where c.country = $1 and o.created_at > now() - interval '7 days' "
        "order by o.created_at desc limit 50"
    ),
    "insert + params": (
        "insert into orders (id, customer_id, total, status) values ($1, $2, $3, $4) "
        "on conflict (id) do update set total = excluded.total returning id"
    ),
    "cte": (
        "with recent as (select customer_id, sum(total) as spent from orders "
        "where created_at > now() - interval '30 days' group by customer_id) "
        "select c.name, r.spent from recent r join customers c on c.id = r.customer_id "
        "where r.spent > (select avg(spent) from recent) order by r.spent desc"
    ),
    "3 stacked (per stmt)": (
        "select 1; update orders set status = 'paid' where id = $1; "
        "delete from carts where customer_id = $2"
    ),
}


def per_call_us(sql: str, n: int) -> tuple[float, float]:
    """Median and worst over the rounds of the mean microseconds per statement."""
    statements = len(analyse(sql))
    for _ in range(n // 10):  # warm up
        analyse(sql)
    means = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(n):
            analyse(sql)
        means.append((time.perf_counter() - start) / n / statements * 1e6)
    return statistics.median(means), max(means)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    compiled = "yes (sqlglotc)" if tokens.SQLGLOTC_INSTALLED else "no (pure Python)"
    print(f"SQL guard analysis: Python {platform.python_version()}, sqlglot compiled: {compiled}")
    print(f"{ROUNDS} rounds of {n} analyses per query; aim <= {AIM_US:.0f} us per statement")
    print(f"{'query':<22} {'median us':>10} {'worst us':>10}  verdict")
    for name, sql in QUERIES.items():
        median, worst = per_call_us(sql, n)
        verdict = "meets the aim" if worst <= AIM_US else "MISSES the aim"
        print(f"{name:<22} {median:>10.1f} {worst:>10.1f}  {verdict}")
        _report.row(area="sql", path=f"SQL analysis: {name}", figure=median,
                    unit="µs/statement", better="lower", aim=_report.at_most(AIM_US),
                    note=f"worst round {worst:.1f} µs; sqlglot compiled: {compiled}")  # fmt: skip


if __name__ == "__main__":
    main()
