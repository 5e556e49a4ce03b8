"""The three tutorials run as written: a page's shell blocks in order in one shell, and its agent
script as the file it names, with free ports instead of the page's, and with the answers the
page says they give. What a person does by hand is done by the test, and said where:

* the FAQ agent's PostgreSQL is a throwaway cluster (the page's ``PG*`` values are examples);
* Alice's sign-in and consent, which the page does in a browser, are done in Debian's Chromium
  (Playwright), which hands back the address the page says to paste;
* the transfer's second shell, where Alice approves, is a subshell, with the approval id her
  list shows; the agent waiting for Enter meanwhile runs in the background on a pipe.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether._internal.pgcluster import ThrowawayCluster, free_port

PAGES = Path(__file__).resolve().parents[3] / "docs" / "tutorials"
CHROMIUM = "/usr/bin/chromium"
#: How long a page may run (the longest takes about 70 s).
PAGE_TIMEOUT = 240

#: Alice at her browser: the file with the printed sign-in address, the browser, and what the
#: consent page must show in; the address she is sent to out.
ALICE = """\
import os, sys
from playwright.sync_api import sync_playwright

ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=sys.argv[2], headless=True, args=ARGS)
    page = browser.new_page()
    page.goto(open(sys.argv[1]).read().strip())
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password").fill(os.environ["ALICE_PASSWORD"])
    page.get_by_role("button", name="Sign in").click()
    shown = page.locator("body").inner_text()
    for said in sys.argv[3:]:
        assert said in shown, (said, shown)
    callback = "http://127.0.0.1:8400/callback"
    with page.expect_request(lambda request: request.url.startswith(callback)) as sent:
        page.get_by_role("button", name="Allow").click()
    print(sent.value.url)
    browser.close()
"""


@pytest.fixture
def cluster() -> Iterator[ThrowawayCluster]:
    """A cluster of the page's own: it creates a database and a group role it names."""
    with ThrowawayCluster.start(password=secrets.token_urlsafe(12)) as started:
        yield started


def _blocks(page: str, kind: str) -> list[str]:
    text = (PAGES / page).read_text(encoding="utf-8")
    return re.findall(rf"```{kind}\n(.*?)```", text, flags=re.DOTALL)


def _agent(page: str, tmp_path: Path) -> str:
    """The page's agent script, written where the page runs it; its file name."""
    [agent] = _blocks(page, "python")
    name = re.match(r"# (\S+\.py):", agent)
    assert name is not None, "the agent script names its file in its first line"
    (tmp_path / name.group(1)).write_text(agent, encoding="utf-8")
    return name.group(1)


def _script(steps: list[str], agent: str, ports: tuple[str, ...]) -> str:
    """The shell blocks as one script: free ports for the page's, each run of the agent also
    into ``agent.out``, and the trace the page shows replaced by the one the agent printed."""
    script = "\n".join(steps)
    for port in ports:
        script = script.replace(port, str(free_port()))
    script = script.replace(f"python {agent}\n", f"python {agent} | tee -a agent.out\n")
    shown = re.findall(r"tether audit trace ([0-9a-f]{32})", script)
    assert len(shown) == 1, shown
    script = script.replace(shown[0], "$(sed -n 's/^trace: //p' agent.out | tail -1)")
    # The page stops its background jobs at the end by hand.
    return "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + script


def _run(script: str, tmp_path: Path, **extra: str) -> str:
    """The script in bash, with ``.venv/bin`` first on ``PATH`` as the page asks; its output
    (the test fails with the output and the servers' logs if it fails)."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "COLUMNS": "240",
        **extra,
    }
    for inherited in ("TETHER_ADDR", "TETHER_TOKEN", "TETHER_ROOT_TOKEN"):
        env.pop(inherited, None)
    # A session of its own, so that a page stuck past the timeout (a server that never comes
    # up, and the page's loop waits for it) is stopped with everything it started.
    shell = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    out, err = "", ""
    try:
        out, err = shell.communicate(timeout=PAGE_TIMEOUT)
    except subprocess.TimeoutExpired:
        for signal_ in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(shell.pid, signal_)
            with contextlib.suppress(subprocess.TimeoutExpired):
                out, err = shell.communicate(timeout=5)
                break
        err = f"{err}\nthe page did not finish within {PAGE_TIMEOUT} s"
    logs = "".join(
        f"\n--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
        for log in sorted(tmp_path.glob("*.log"))
    )
    assert shell.returncode == 0, out + err + logs
    return out


def _verified_and_no_problem(out: str) -> None:
    """``tether audit verify`` says the log verifies; ``tether posture`` lists no problem."""
    assert re.search(r"│ True\s+│ \d+\s+│", out), out
    assert re.search(r"┃ kind ┃ subject ┃ summary ┃\n┡[━╇]+┩\n└", out), out


def _listed_after_review(out: str) -> str:
    """The tools the agent's second run listed; its first run listed none (held back until a
    platform admin reviewed them)."""
    first, second = re.findall(r"^tools: (.*)$", out, flags=re.MULTILINE)
    assert first == "[]", out
    return str(second)


def _alice_in_chromium(
    steps: list[str], tmp_path: Path, *, state: str, consent_shows: tuple[str, ...]
) -> list[str]:
    """The steps with Alice's browser in: the address the page prints for it goes to a file
    for her browser, which checks the consent page shows ``consent_shows``, and the address
    the page says to paste is the one she was sent to."""
    assert Path(CHROMIUM).exists(), f"Alice's browser is Debian's chromium at {CHROMIUM}"
    (tmp_path / "alice_at_her_browser.py").write_text(ALICE, encoding="utf-8")
    printed = 'python3 - "$TETHER_ADDR" "$CHALLENGE" <<'
    pasted = f"REDIRECT='http://127.0.0.1:8400/callback?code=…&iss=…&state={state}'"
    assert sum(printed in s for s in steps) == 1
    assert sum(pasted in s for s in steps) == 1
    argv = shlex.join(["alice_at_her_browser.py", "authorize.url", CHROMIUM, *consent_shows])
    browser = f"REDIRECT=$(python {argv})"
    return [
        s.replace(printed, 'python3 - "$TETHER_ADDR" "$CHALLENGE" > authorize.url <<').replace(
            pasted, browser
        )
        for s in steps
    ]


def test_the_faq_agent_tutorial_runs_as_written_and_gets_what_it_shows(
    cluster: ThrowawayCluster, tmp_path: Path
) -> None:
    agent = _agent("faq-agent.md", tmp_path)
    where, *steps = _blocks("faq-agent.md", "sh")
    assert "export PGHOST=" in where  # set here instead: the page's values are examples
    out = _run(
        _script(steps, agent, ("8200", "9101")), tmp_path,
        PATH=f"{Path(sys.executable).parent}:{cluster.pgbin}:{os.environ['PATH']}",
        PGHOST=cluster.host, PGPORT=str(cluster.port), PGUSER="postgres",
        PGPASSWORD=cluster.password,
    )  # fmt: skip
    assert _listed_after_review(out) == "['search_faq']", out
    assert "answer: Monday to Friday, 9:00 to 17:00 (CET); closed on public holidays." in out
    assert "'bearer_seen': False" in out
    read_as = re.search(r"'read_as': '(tether_lea_[a-z0-9]+)'", out)
    assert read_as is not None, out
    # Within the lease its role exists; after the sleep, no role of Tether's is left.
    assert re.findall(r"^tether_lea_[a-z0-9]+$", out, flags=re.MULTILINE) == [read_as.group(1)]
    assert "expired" in out, out
    # Afterwards: the trace has the call, the log verifies, the posture lists no problem.
    assert 'action call_tool → resource Tool::"support-kb/search_faq"' in out, out
    _verified_and_no_problem(out)


def test_the_personal_agent_tutorial_runs_as_written_and_gets_what_it_shows(
    tmp_path: Path,
) -> None:
    agent = _agent("personal-agent.md", tmp_path)
    steps = _alice_in_chromium(
        _blocks("personal-agent.md", "sh"), tmp_path, state="alice-1",
        consent_shows=("assistant", "show me my balance and recent payments", "accounts:read"),
    )  # fmt: skip
    # The last block revokes her grant and runs the agent, which the page says is refused.
    assert steps[-1].rstrip().endswith(f"python {agent}")
    steps[-1] = steps[-1].rstrip().removesuffix(f"python {agent}")
    steps[-1] += f"if python {agent} > after-revoke.out 2>&1; then exit 1; fi\n"
    out = _run(_script(steps, agent, ("8200", "9102")), tmp_path)
    assert _listed_after_review(out) == "['get_account']", out
    assert "alice: read" in out, out
    assert "holder: Alice Martin (alice)" in out, out
    assert "bob: refused" in out, out
    assert "refused: this request acts for alice; bob's account is not theirs to read" in out
    # The trace names the person, her app, the acting instance and the grant.
    assert "user alice → app assistant-web → acting agent" in out, out
    assert '"grant_id": "grt_' in out, out
    _verified_and_no_problem(out)
    refused = (tmp_path / "after-revoke.out").read_text()
    assert "the user has given this agent no grant in force" in refused, refused


#: The page's second shell, where Alice answers: run in a subshell of the first (its ``cd`` and
#: environment stay there), with her real password and the id her ``tether approval list``
#: shows instead of the page's examples.
def _alices_shell(block: str) -> str:
    lines = [line for line in block.splitlines() if not line.startswith("export ALICE_PASSWORD=")]
    shown = sorted(set(re.findall(r"apr_[a-z0-9]{26}", block)))
    assert len(shown) == 1, shown
    pick = (
        "APPROVAL=$(tether approval list --state pending -o json | python3 -c "
        "'import json, sys; [a] = json.load(sys.stdin); print(a[\"id\"])')"
    )
    body = "\n".join(lines).replace(shown[0], "$APPROVAL")
    body = body.replace("tether approval show", f"{pick}\ntether approval show", 1)
    return f"(\n{body}\n)\n"


def test_the_approved_transfer_tutorial_runs_as_written_and_gets_what_it_shows(
    tmp_path: Path,
) -> None:
    page = "approved-transfer.md"
    agent = _agent(page, tmp_path)
    steps = _alice_in_chromium(
        _blocks(page, "sh"), tmp_path, state="alice-2",
        consent_shows=("bank-agent", "pay the people I ask you to", "payments"),
    )  # fmt: skip
    waiting = f"python {agent}\n# tools: ['balance', 'transfer']"
    assert sum(waiting in s for s in steps) == 1
    [alice] = [s for s in steps if "tether approval approve" in s]
    # The agent waits for Enter in the first shell while Alice answers in the second: here it
    # runs in the background on a pipe, and gets its Enter once her shell is done.
    background = (
        f"mkfifo enter\npython {agent} < enter | tee -a agent.out &\nexec 3> enter\n"
        "until grep -q 'press Enter once alice has answered' agent.out; do sleep 0.2; done\n"
        "# tools: ['balance', 'transfer']"
    )
    steps = [
        _alices_shell(s) + "echo >&3\nwait $!\n" if s is alice else s.replace(waiting, background)
        for s in steps
    ]
    out = _run(_script(steps, agent, ("8200", "9103")), tmp_path)
    assert _listed_after_review(out) == "['balance', 'transfer']", out
    assert "alice's balance is 2,340.50 EUR" in out, out
    assert "approval pending: the person asked has not answered yet" in out, out
    # She saw the exact call; the substituted one is refused; the approved one runs once.
    assert '"arguments": {"amount": 100, "to": "bob"}' in out, out
    assert "another call, same approval: approval refused: it was given for another call" in out
    assert "the approved call: moved 100.00 EUR from alice to bob" in out, out
    ledger = (tmp_path / "bank-ledger.jsonl").read_text().splitlines()
    assert ledger == ['{"from": "alice", "to": "bob", "amount": 100.0}'], ledger
    # The trace names her approval of the call that ran; its record is proven offline.
    assert '"approver": "alice"' in out, out
    assert re.search(r"proven\s+True", out), out
    _verified_and_no_problem(out)
