"""The core stays sans-I/O: its modules import neither sockets nor threads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "wsauth_sync"
CORE = ["errors", "request", "sources", "verifiers", "jwt_verifier", "http11", "handshake",
        "origin", "audit", "messages", "keepalive"]
IO_MODULES = {"socket", "ssl", "select", "selectors", "threading", "asyncio", "socketserver",
              "wsauth_sync.connection", "wsauth_sync.server", "wsauth_sync.app"}
RELATIVE_IO = {"connection", "server", "app", "cli"}


def imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    return names


@pytest.mark.parametrize("module", CORE)
def test_core_module_does_no_io(module: str) -> None:
    names = imported_names(PACKAGE / f"{module}.py")
    assert names, "the parser found the imports"
    assert not {name.split(".")[0] for name in names} & IO_MODULES
    assert not names & IO_MODULES
    assert not names & RELATIVE_IO


def test_every_module_is_classified() -> None:
    shells = {"connection", "server", "app", "cli", "echo", "wsgi", "cheroot_gateway", "guards",
              "timers", "transport", "upgrade", "keystore", "pgstore", "dbwatch", "workers",
              "pending", "caps", "gevent_gateway", "eventlet_gateway", "uwsgi_takeover",
              "cli_echo", "cli_keys",
              "__init__", "__main__"}
    assert {p.stem for p in PACKAGE.glob("*.py")} <= set(CORE) | shells
