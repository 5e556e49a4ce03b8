"""The SDK needs only the base install: importing and using ``tether.Client``,
``tether.AsyncClient`` and ``tether.guard`` never loads a server extra."""

from __future__ import annotations

import subprocess
import sys

#: The server extra's packages (pyproject.toml): none may be imported by the SDK.
SERVER_ONLY = ("fastapi", "starlette", "sqlalchemy", "alembic", "uvicorn", "psycopg", "mcp",
               "structlog", "cedarpy", "argon2", "jinja2")  # fmt: skip

PROGRAM = f"""
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {SERVER_ONLY!r}:
            raise ImportError("server extra imported by the SDK: " + name)
        return None

sys.meta_path.insert(0, Refuse())
import tether
from tether.crypto.assertion import generate_agent_key

pem = generate_agent_key().private_pem
client = tether.Client("http://127.0.0.1:9", agent="spiffe://acme.org/agent/a", key=pem)
aclient = tether.AsyncClient("http://127.0.0.1:9", agent="spiffe://acme.org/agent/a", key=pem)

@tether.guard(action="call_tool", resource={{"type": "Tool", "id": "t"}})
def tool() -> None: ...

try:
    with client:
        tool()
except tether.CheckUnavailable:
    print("denied")
"""


def test_the_sdk_works_without_the_server_extras() -> None:
    ran = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "denied"  # nothing listens on port 9: fail closed
