"""A throwaway PostgreSQL server from the Debian server binaries, for tests and benchmarks.

``initdb`` and ``pg_ctl`` refuse to run as root, so as root they run as the ``postgres`` system
user (``runuser``); the data directory is a fresh temporary directory owned by that user. The
server listens on 127.0.0.1 only, on a free port, with its socket in the data directory's
parent (never ``/var/run/postgresql``), and requires SCRAM passwords over TCP, so password
checks and ``VALID UNTIL`` are real. ``durable=False`` turns off ``fsync`` (tests);
benchmarks keep PostgreSQL's defaults.

Example::

    with ThrowawayCluster.start(password="pw") as cluster:
        psycopg.connect(host=cluster.host, port=cluster.port, user="postgres", password="pw")
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["SUPERUSER", "ClusterUnavailable", "ThrowawayCluster", "free_port", "server_binaries"]

SUPERUSER = "postgres"


class ClusterUnavailable(RuntimeError):
    """The server binaries are missing, or the server did not start (the log's tail said)."""


def server_binaries() -> str | None:
    """The newest installed server binaries' directory, or ``$PGBIN``; None if there are
    none."""
    if explicit := os.environ.get("PGBIN"):
        return explicit if os.path.exists(os.path.join(explicit, "initdb")) else None
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major_version)
    return os.path.dirname(found[-1]) if found else None


def _major_version(initdb: str) -> int:
    name = Path(initdb).parents[1].name
    return int(name) if name.isdigit() else 0


def free_port() -> int:
    """A loopback port no one listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _run(cmd: list[str], *, check: bool) -> int:
    """Run a server program (fixed arguments; no shell). initdb and postgres refuse to run
    as root: as root, it runs as the ``postgres`` system user."""
    argv = ["runuser", "-u", SUPERUSER, "--", *cmd] if os.geteuid() == 0 else cmd
    done = subprocess.run(argv, check=check, stdout=subprocess.DEVNULL)  # noqa: S603
    return done.returncode


def _prepare_dir(password: str) -> str:
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError as exc:
            raise ClusterUnavailable("running as root, but there is no 'postgres' user") from exc
    directory = tempfile.mkdtemp(prefix="pgtest-")
    with open(os.path.join(directory, "pw"), "w", encoding="utf-8") as f:
        f.write(password + "\n")
    if os.geteuid() == 0:
        owner = pwd.getpwnam(SUPERUSER)
        for path in (directory, os.path.join(directory, "pw")):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    os.chmod(directory, 0o700)
    return directory


@dataclass
class ThrowawayCluster:
    host: str
    port: int
    password: str
    directory: str
    pgbin: str
    user: str = SUPERUSER

    @classmethod
    def start(
        cls, *, password: str, durable: bool = False, max_connections: int = 200
    ) -> ThrowawayCluster:
        pgbin = server_binaries()
        if pgbin is None:
            raise ClusterUnavailable(
                "PostgreSQL server binaries not installed (apt-get install postgresql)"
            )
        directory = _prepare_dir(password)
        cluster = cls(
            host="127.0.0.1",
            port=free_port(),
            password=password,
            directory=directory,
            pgbin=pgbin,
        )
        try:
            cluster._init_and_start(durable=durable, max_connections=max_connections)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _init_and_start(self, *, durable: bool, max_connections: int) -> None:
        d, pgbin = self.directory, self.pgbin
        initdb = [f"{pgbin}/initdb", "-D", f"{d}/data", "-U", SUPERUSER, f"--pwfile={d}/pw"]
        initdb += ["--auth-local=trust", "--auth-host=scram-sha-256", "--no-instructions"]
        initdb += ["-E", "UTF8", "--locale=C.UTF-8"] + ([] if durable else ["--no-sync"])
        _run(initdb, check=True)
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {d}"
        options += f" -c max_connections={max_connections}"
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        start = [f"{pgbin}/pg_ctl", "-D", f"{d}/data", "-l", f"{d}/log", "-w"]
        if _run([*start, "-o", options, "start"], check=False) != 0:
            log = Path(d, "log")
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
            raise ClusterUnavailable(f"PostgreSQL did not start:\n{tail}")

    def binary(self, name: str) -> str:
        """The path of one of the server's client programs (``pgbench``, ``psql``)."""
        return os.path.join(self.pgbin, name)

    def stop(self) -> None:
        stop = [f"{self.pgbin}/pg_ctl", "-D", f"{self.directory}/data", "-m", "immediate", "-w"]
        if os.path.exists(f"{self.directory}/data/postmaster.pid"):
            _run([*stop, "stop"], check=False)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> ThrowawayCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
