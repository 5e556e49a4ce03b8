"""A plain-Python agent: its tools are ordinary functions guarded with ``@tether.guard``, and
the one that reads the shop's database does it through the SQL guard, with just-in-time
credentials that end with the task.

What happens on ``answer(order_id)``:

1. the agent authenticates to Tether with its own key (``tether.Client``; no shared secret);
2. ``@tether.guard`` asks the checkpoint whether this agent may call the tool
   ``shop/order_total`` with these arguments — the body runs only on an allow;
3. inside, the agent takes a lease on the database role ``reader`` (a PostgreSQL role created
   for this task, dropped when the block ends);
4. every statement goes through ``tether.sql``: parsed, allow-listed, and decided per table
   (``select`` on ``shop-db/public.orders``) before it is sent;
5. leaving the blocks revokes the lease and forgets the token.

Run against a Tether with a PostgreSQL engine ``shop-db`` (role ``reader``) and a policy that
permits it (see ``docs/sql-guard.md``)::

    python examples/plain_agent/plain_agent.py --tether http://127.0.0.1:8200 \\
        --agent spiffe://acme.org/agent/shop-bot --key shop-bot.pem --order 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import tether
import tether.sql

ENGINE, ROLE = "shop-db", "reader"


def tool(
    name: str, *, data_class: str = "internal", state_changing: bool = False
) -> dict[str, object]:
    """A ``Tool`` entity with the attributes Tether's Cedar schema requires of one."""
    properties = {"name": name, "data_class": data_class, "state_changing": state_changing}
    return {"type": "Tool", "id": f"shop/{name}", "properties": properties}


@tether.guard(action="call_tool", resource=tool("order_total"))
def order_total(order_id: int) -> int | None:
    """The total of one order, read with a lease through the SQL guard."""
    client = tether.current_client()
    assert client is not None  # the guard let the call through: a client is in context
    with client.lease(ENGINE, ROLE) as lease, tether.sql.connect(client, lease) as db:
        row = db.execute("select total from orders where id = %s", [order_id]).fetchone()
    return None if row is None else int(row[0])


@tether.guard(action="call_tool", resource=tool("salaries", data_class="restricted"))
def salaries() -> list[tuple[str, int]]:
    """A tool the agent should never be allowed to call (no policy permits it)."""
    client = tether.current_client()
    assert client is not None
    with client.lease(ENGINE, ROLE) as lease, tether.sql.connect(client, lease) as db:
        return [(str(n), int(s)) for n, s in db.execute("select name, salary from payroll")]


def answer(addr: str, *, agent: str, key: bytes | Path, order_id: int) -> str:
    """The agent's one task: tell the total of an order."""
    with tether.Client(addr, agent=agent, key=key):
        total = order_total(order_id)
    return f"order {order_id}: no such order" if total is None else f"order {order_id}: {total}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tether", required=True, help="Tether's address")
    parser.add_argument("--agent", required=True, help="the agent's SPIFFE ID")
    parser.add_argument("--key", required=True, type=Path, help="the agent's private key (PEM)")
    parser.add_argument("--order", required=True, type=int)
    args = parser.parse_args()
    try:
        print(answer(args.tether, agent=args.agent, key=args.key, order_id=args.order))
    except tether.Denied as refused:
        raise SystemExit(f"refused: {refused.message} ({refused.code})") from None


if __name__ == "__main__":
    main()
