"""A throwaway PostgreSQL server on 127.0.0.1 for the key-store tests.

The server binaries come from Debian's ``postgresql`` package, which the README's test
command installs. PostgreSQL refuses to run as root, so as root the cluster belongs to
the ``postgres`` user the package creates. :class:`Cluster` can also restart and freeze
(SIGSTOP) its server, for the tests of database failures.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import free_port
from needs import require_postgresql


def _as_owner(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class Cluster:
    """A running throwaway cluster: its DSN, and the means to restart or freeze it."""

    def __init__(self, bindir: str, folder: str, port: int) -> None:
        self.bindir = bindir
        self.folder = folder
        self.data = os.path.join(folder, "data")
        self.port = port
        self.dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _pg_ctl(self, *args: str, timeout: float = 90) -> None:
        # -l keeps the server's output away from our pipes (else run() waits for it to exit).
        subprocess.run(
            _as_owner(
                [
                    f"{self.bindir}/pg_ctl",
                    "-D",
                    self.data,
                    "-w",
                    "-t",
                    "60",
                    "-l",
                    os.path.join(self.folder, "log"),
                    *args,
                ]
            ),
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off"
        self._pg_ctl("-o", options, "start")
        _wait_for_tcp(self.port)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self._pg_ctl("-m", "fast", "stop", timeout=60)

    def restart(self) -> None:
        """Restart on the same port, as an administrator would (open sessions end)."""
        self._pg_ctl("-m", "fast", "restart")
        _wait_for_tcp(self.port)

    def processes(self) -> list[int]:
        """The postmaster's PID first, then its children (the backends and workers)."""
        with open(os.path.join(self.data, "postmaster.pid")) as pidfile:
            postmaster = int(pidfile.readline())
        children = []
        for stat in glob.glob("/proc/[0-9]*/stat"):
            with contextlib.suppress(OSError), open(stat) as file:
                fields = file.read().rpartition(")")[2].split()
                if int(fields[1]) == postmaster:
                    children.append(int(stat.split("/")[2]))
        return [postmaster, *children]

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """SIGSTOP the whole server: TCP stays up (the kernel answers), nothing replies."""
        stopped: list[int] = []
        try:
            for pid in self.processes():
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            yield
        finally:
            for pid in reversed(stopped):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)


def sql(pg: Cluster, statement: str, *params: object) -> list[tuple[Any, ...]]:
    """Run one statement as a database administrator would, on a connection of its own."""
    import psycopg  # PostgreSQL's tests only: the rest runs without it

    with psycopg.connect(pg.dsn, autocommit=True) as db:
        return db.execute(statement, params).fetchall()


def _wait_for_tcp(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:  # pg_ctl -w waited; this makes sure TCP answers too
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    """Start a cluster in a temporary folder; stop and delete it on exit."""
    bindir = require_postgresql()  # skips (or fails under WSAUTH_REQUIRE_ALL=1)
    folder = tempfile.mkdtemp(prefix="wsauth-pg-")
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    server = Cluster(bindir, folder, free_port())
    try:
        subprocess.run(
            _as_owner(
                [
                    f"{bindir}/initdb",
                    "-D",
                    server.data,
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def run_postgres() -> Iterator[str]:
    """Start a cluster in a temporary folder; yield its DSN; stop and delete it."""
    with cluster() as server:
        yield server.dsn


def postgres_dsn(request: pytest.FixtureRequest) -> str:
    """The session's PostgreSQL DSN (the server starts on first use)."""
    return str(request.getfixturevalue("postgresql"))
