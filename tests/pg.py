"""A throwaway PostgreSQL server on 127.0.0.1 for the key-store tests.

The server binaries come from Debian's ``postgresql`` package, which the README's test
command installs. PostgreSQL refuses to run as root, so as root the cluster belongs to
the ``postgres`` user the package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
from helpers import free_port


def _binaries() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        pytest.fail("PostgreSQL server binaries are missing: run the README's test command "
                    "(it installs Debian's postgresql package)")
    return os.path.dirname(found[-1])


def _as_owner(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command



def run_postgres() -> Iterator[str]:
    """Start a cluster in a temporary folder; yield its DSN; stop and delete it."""
    bindir = _binaries()
    folder = tempfile.mkdtemp(prefix="wsauth-pg-")
    data = os.path.join(folder, "data")
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    port = free_port()
    subprocess.run(_as_owner([f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres",
                              "--no-sync"]), check=True, capture_output=True, timeout=120)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off"
    subprocess.run(_as_owner([f"{bindir}/pg_ctl", "-D", data, "-o", options, "-w", "-t", "60",
                              "-l", os.path.join(folder, "log"), "start"]),
                   check=True, capture_output=True, timeout=90)
    try:
        dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + 30
        while True:  # pg_ctl -w waited; this makes sure TCP answers too
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield dsn
    finally:
        subprocess.run(_as_owner([f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def postgres_dsn(request: pytest.FixtureRequest) -> str:
    """The session's PostgreSQL DSN (the server starts on first use)."""
    return str(request.getfixturevalue("postgresql"))
