"""Every name the README tells users to use is importable from ``wsauth_sync`` itself.

A name "looks like our API" when the README writes it in backticks or in a Python example
and a module of the package defines a public class or function of that name. Names the
README spells with their module path must resolve there; the few that stay in their
module on purpose are listed in MODULE_ONLY.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import wsauth_sync
from wsauth_sync.core.errors import HandshakeError

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

#: Documented under their module only: the demo handler, and the error the WSGI shell
#: raises internally. Anything else the README names must come from ``wsauth_sync``.
MODULE_ONLY = {"echo", "demo_page", "SocketTakenOver"}
#: Modules that import an optional server: ``import wsauth_sync`` must not load them.
OPTIONAL_SERVERS = ("gevent", "eventlet", "cheroot", "psycopg")


def defined_names() -> set[str]:
    """Public classes and functions defined at module level anywhere in the package."""
    names = set()
    for path in (ROOT / "wsauth_sync").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and not node.name.startswith("_"):
                names.add(node.name)
    return names


def readme_names() -> set[str]:
    """Identifiers the README writes in backticks or in its Python examples."""
    fence = re.compile(r"^```(\w*)\n(.*?)^```$", flags=re.M | re.S)
    spans = [
        re.sub(r"#.*", "", body)  # code, not its comments
        for kind, body in fence.findall(README)
        if kind == "python"
    ]
    spans += re.findall(r"`([^`]+)`", fence.sub("", README))
    # Not the field names of log lines and keyword arguments (``peer=``, ``limiter=``).
    spans = [re.sub(r"\b\w+=", " ", span) for span in spans]
    return {name for span in spans for name in re.findall(r"[A-Za-z_]\w*", span)}


def qualified_names() -> set[str]:
    return set(re.findall(r"wsauth_sync(?:\.\w+)+", README))


def test_the_readme_names_our_api() -> None:
    """The extraction itself: names from prose, tables and examples are found."""
    named = readme_names() & defined_names()
    assert {
        "WebSocketMiddleware",
        "open_keystore",
        "FailedAuthLimiter",
        "StaticTokens",
        "install_log_redaction",
        "redact_message",
        "handle_request",
    } <= named


def test_every_name_the_readme_uses_is_importable_from_the_package() -> None:
    # dir(), not hasattr(): naming a lazy gateway here would import gevent and eventlet.
    missing = sorted(
        name
        for name in readme_names() & defined_names() - MODULE_ONLY
        if name not in dir(wsauth_sync)
    )
    assert not missing, f"named in the README but not exported by wsauth_sync: {missing}"


def test_exports_are_listed_in_all() -> None:
    exported = set(wsauth_sync.__all__)
    for name in readme_names() & defined_names() - MODULE_ONLY:
        if name in ("CherootGateway", "GeventHandler", "EventletProtocol"):
            assert name in dir(wsauth_sync) and name not in exported  # imported on use
        else:
            assert name in exported, name
    assert all(hasattr(wsauth_sync, name) for name in exported)


def test_every_error_with_a_status_is_exported() -> None:
    """The README's table of statuses is answered by these classes: users catch them."""
    errors = importlib.import_module("wsauth_sync.core.errors")
    statuses = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, HandshakeError)
    }
    assert {"UnverifiableToken", "RequestTimeout", "URITooLong", "NoSocketTakeover"} <= statuses
    assert statuses <= set(wsauth_sync.__all__), statuses - set(wsauth_sync.__all__)


@pytest.mark.parametrize("dotted", sorted(qualified_names()))
def test_module_paths_in_the_readme_resolve(dotted: str) -> None:
    parts = dotted.split(".")
    if len(parts) > 2 and parts[1].endswith("_gateway"):
        # Importing a gateway imports its server (eventlet warns on import): read it.
        source = (ROOT / "wsauth_sync" / f"{parts[1]}.py").read_text()
        assert parts[2:] and re.search(rf"^class {parts[2]}\b", source, flags=re.M)
        return
    for cut in range(len(parts), 0, -1):
        try:
            value: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            value = getattr(value, attribute)
        return
    raise AssertionError(dotted)


def test_importing_the_package_loads_no_optional_server() -> None:
    code = (
        "import sys, wsauth_sync; from wsauth_sync import *; "
        f"print([m for m in {OPTIONAL_SERVERS!r} if m in sys.modules])"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    assert loaded == "[]"


def test_the_gateways_load_on_first_use() -> None:
    pytest.importorskip("cheroot")  # in the test extra; the gateway needs it
    from wsauth_sync.cheroot_gateway import CherootGateway

    assert wsauth_sync.CherootGateway is CherootGateway
    with pytest.raises(AttributeError):
        wsauth_sync.NoSuchName  # noqa: B018
