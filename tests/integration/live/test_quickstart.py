"""The quickstart page runs as written: its shell block, in a fresh directory, against a
server it starts itself (on a free port instead of 8200), with the answers it says it gets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .conftest import free_port

PAGE = Path(__file__).resolve().parents[3] / "docs" / "quickstart.md"


def _blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_the_quickstart_runs_as_written_and_gets_the_answers_it_shows(tmp_path: Path) -> None:
    setup, steps = _blocks()
    assert "make install" in setup  # the one step a test cannot repeat: done by make test
    script = steps.replace("8200", str(free_port()))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("TETHER_TOKEN", None)
    env.pop("TETHER_ADDR", None)
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr + (tmp_path / "serve.log").read_text()
    answers = [line for line in ran.stdout.splitlines() if line.startswith('{"decision"')]
    assert len(answers) == 3, ran.stdout
    assert '"decision":true' in answers[0]
    assert '"policy_ids":["faq-bot-searches-the-faq"]' in answers[0]
    assert '"decision":false' in answers[1]
    assert "no policy permits this" in answers[1]
    assert '"decision":false' in answers[2]
    assert "unauthenticated: the token is revoked" in answers[2]
    assert "True" in ran.stdout.split(answers[2], 1)[1]  # the log verified
