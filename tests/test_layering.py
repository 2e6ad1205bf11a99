"""The layers stay apart: the core is sans-I/O, all the way down its imports.

Every module under ``wsauth_sync/core/`` (and the two sans-I/O helpers of the connection
layer) is checked with the whole closure of what it imports inside the package: none of
them may import sockets, threads, selectors or clocks, nor any shell module. A module
that imported a shell which imported ``socket`` fails here even though its own import
lines look clean.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "wsauth_sync"
SANS_IO = sorted(
    {f"core.{p.stem}" for p in (PACKAGE / "core").glob("*.py") if p.stem != "__init__"}
    | {"messages", "keepalive", "limits"}
)
#: Standard modules that do I/O, wait, or read a clock: never in the core's closure.
IO_MODULES = {
    "socket",
    "ssl",
    "select",
    "selectors",
    "threading",
    "asyncio",
    "socketserver",
    "time",
    "urllib.request",
    "http.client",
    "subprocess",
    "multiprocessing",
}


def module_path(name: str) -> Path:
    """``core.handshake`` -> wsauth_sync/core/handshake.py (a package -> its __init__)."""
    base = PACKAGE.joinpath(*name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def imports_of(name: str) -> tuple[set[str], set[str]]:
    """The package modules and the outside modules ``name`` imports, relative ones resolved."""
    package = name.rsplit(".", 1)[0] if "." in name else ""
    if module_path(name).name == "__init__.py":
        package = name
    inside: set[str] = set()
    outside: set[str] = set()
    for node in ast.walk(ast.parse(module_path(name).read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name
                if top == "wsauth_sync" or top.startswith("wsauth_sync."):
                    inside.add(top.removeprefix("wsauth_sync").lstrip(".") or "__init__")
                else:
                    outside.add(top)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                base = parts[: len(parts) - (node.level - 1)]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                candidates = [f"{target}.{a.name}" if target else a.name for a in node.names]
                found = [c for c in candidates if module_path(c).exists()]
                inside.update(found or [target or "__init__"])
            elif (node.module or "").startswith("wsauth_sync"):
                inside.add(
                    (node.module or "").removeprefix("wsauth_sync").lstrip(".") or "__init__"
                )
            else:
                outside.add(node.module or "")
    return inside, outside


def closure(name: str) -> dict[str, set[str]]:
    """Every package module reachable from ``name``, with its outside imports."""
    seen: dict[str, set[str]] = {}
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        inside, outside = imports_of(current)
        seen[current] = outside
        todo.extend(inside - seen.keys())
    return seen


@pytest.mark.parametrize("module", SANS_IO)
def test_sans_io_module_imports_no_io_all_the_way_down(module: str) -> None:
    reached = closure(module)
    assert reached[module], "the parser found the imports"
    shells = {name for name in reached if name not in SANS_IO and name != "core.__init__"}
    assert not shells, f"{module} reaches shell modules {shells}"
    for name, outside in reached.items():
        io = {imp for imp in outside if imp in IO_MODULES or imp.split(".")[0] in IO_MODULES}
        assert not io, f"{module} reaches {name}, which imports {io}"


def test_the_closure_sees_an_indirect_import() -> None:
    """The walk itself: a shell imported through the core's package counts."""
    inside, _ = imports_of("socket_shell")
    assert "core.handshake" in inside and "connection" in inside
    assert "transport" in closure("socket_shell")


def test_every_module_is_classified() -> None:
    shells = {
        "connection",
        "server",
        "config",
        "cli",
        "echo",
        "wsgi",
        "cheroot_gateway",
        "guards",
        "timers",
        "transport",
        "socket_shell",
        "keystore",
        "pgstore",
        "dbwatch",
        "dbconn",
        "workers",
        "pending",
        "caps",
        "gevent_gateway",
        "eventlet_gateway",
        "uwsgi_takeover",
        "cli_echo",
        "cli_keys",
        "jwt_verifier",
        "pages",
        "__init__",
        "__main__",
    }
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules <= set(SANS_IO) | shells, modules - set(SANS_IO) - shells
