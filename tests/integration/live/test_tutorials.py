"""The FAQ-agent tutorial runs as written: its shell blocks in order in one shell, and its
agent script as the file it names, against a throwaway PostgreSQL, with free ports instead of
the page's 8200 and 9101, and with the answers the page says they give."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether._internal.pgcluster import ThrowawayCluster

from .conftest import free_port

PAGE = Path(__file__).resolve().parents[3] / "docs" / "tutorials" / "faq-agent.md"


@pytest.fixture
def cluster() -> Iterator[ThrowawayCluster]:
    """A cluster of the page's own: it creates a database and a group role it names."""
    with ThrowawayCluster.start(password=secrets.token_urlsafe(12)) as started:
        yield started


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.DOTALL)


def _script() -> str:
    """The page's shell blocks, in order, as one script; the trace it shows replaced by the
    one the agent printed."""
    where, *steps = _blocks("sh")
    assert "export PGHOST=" in where  # set by the test: the page's values are examples
    script = "\n".join(steps).replace("8200", str(free_port())).replace("9101", str(free_port()))
    shown = re.findall(r"tether audit trace ([0-9a-f]{32})", script)
    assert len(shown) == 1, shown
    return script.replace(shown[0], "$(sed -n 's/^trace: //p' agent.out | tail -1)")


def test_the_faq_agent_tutorial_runs_as_written_and_gets_what_it_shows(
    cluster: ThrowawayCluster, tmp_path: Path
) -> None:
    [agent] = _blocks("python")
    name = re.match(r"# (\S+\.py):", agent)
    assert name is not None, "the agent script names its file in its first line"
    (tmp_path / name.group(1)).write_text(agent, encoding="utf-8")
    # Each run of the agent also goes to agent.out, for the trace the page looks up after.
    script = _script().replace(
        f"python {name.group(1)}\n", f"python {name.group(1)} | tee -a agent.out\n"
    )
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{cluster.pgbin}:{os.environ['PATH']}",
        "PGHOST": cluster.host,
        "PGPORT": str(cluster.port),
        "PGUSER": "postgres",
        "PGPASSWORD": cluster.password,
        "COLUMNS": "240",
    }
    for inherited in ("TETHER_ADDR", "TETHER_TOKEN", "TETHER_ROOT_TOKEN"):
        env.pop(inherited, None)
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    logs = "".join(
        f"\n--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
        for log in sorted(tmp_path.glob("*.log"))
    )
    said = ran.stdout + ran.stderr + logs
    assert ran.returncode == 0, said
    first, second = re.findall(r"^tools: (.*)$", ran.stdout, flags=re.MULTILINE)
    assert first == "[]", said  # held back until reviewed
    assert second == "['search_faq']", said
    assert "answer: Monday to Friday, 9:00 to 17:00 (CET); closed on public holidays." in said
    assert "'bearer_seen': False" in said
    read_as = re.search(r"'read_as': '(tether_lea_[a-z0-9]+)'", ran.stdout)
    assert read_as is not None, said
    # Within the lease its role exists; after the sleep, no role of Tether's is left.
    roles = re.findall(r"^tether_lea_[a-z0-9]+$", ran.stdout, flags=re.MULTILINE)
    assert roles == [read_as.group(1)], said
    assert "expired" in ran.stdout, said
    # Afterwards: the trace has the call, the log verifies, the posture lists no problem.
    assert 'action call_tool → resource Tool::"support-kb/search_faq"' in ran.stdout, said
    assert re.search(r"│ True\s+│ \d+\s+│", ran.stdout), said
    assert re.search(r"┃ kind ┃ subject ┃ summary ┃\n┡[━╇]+┩\n└", ran.stdout), said
