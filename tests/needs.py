"""What a test needs from outside Python's standard test extra, and what happens without it.

Some tests drive real outside programs (Chromium, Node, nginx, PostgreSQL, uWSGI) or
optional servers (gevent, eventlet, Django, waitress). On a machine without one of them
those tests are *skipped* with a reason naming how to install it, and everything else
runs. CI sets ``WSAUTH_REQUIRE_ALL=1`` (see ``.ci/run``): a missing tool then *fails*
the test, so CI still proves every one of them.

``WSAUTH_TEST_HIDE=chromium,nginx`` treats the listed names as missing even when they are
installed, to see what a newcomer's machine would run.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

REQUIRE_ALL = "WSAUTH_REQUIRE_ALL"
HIDE = "WSAUTH_TEST_HIDE"
SYSTEM_DEPS = "sh tests/install-system-deps.sh"
TEST_EXTRA = "python3 -m pip install -e '.[test]'"
NODE_MODULES = "npm ci in tests/node (tests/install-system-deps.sh does it)"


def _hidden(name: str) -> bool:
    return name in {item.strip() for item in os.environ.get(HIDE, "").split(",")}


def missing(name: str, how: str, *, module_level: bool = False) -> NoReturn:
    """Skip the test (fail it under ``WSAUTH_REQUIRE_ALL=1``): ``name`` is not installed."""
    reason = f"{name} not installed ({how})"
    if os.environ.get(REQUIRE_ALL) == "1":
        pytest.fail(f"{reason}; {REQUIRE_ALL}=1 requires every tool", pytrace=False)
    pytest.skip(reason, allow_module_level=module_level)


def require_tool(
    name: str,
    how: str = SYSTEM_DEPS,
    *,
    candidates: tuple[str, ...] = (),
    module_level: bool = False,
) -> str:
    """The path of the executable ``name`` (on PATH, or one of ``candidates``).

    Raises:
        Skipped: it is missing (Failed under ``WSAUTH_REQUIRE_ALL=1``).
    """
    if not _hidden(name):
        for found in (shutil.which(name), *candidates):
            if found and os.access(found, os.X_OK):
                return found
    missing(name, how, module_level=module_level)


def require_installed(
    name: str,
    how: str = TEST_EXTRA,
    *,
    module_level: bool = False,
) -> None:
    """Check that the Python package ``name`` is installed, without importing it (a
    server run in a subprocess, such as gevent, need not be imported here)."""
    top = name.split(".")[0]
    if _hidden(top) or importlib.util.find_spec(top) is None:
        missing(top, how, module_level=module_level)


def require_module(
    name: str,
    how: str = TEST_EXTRA,
    *,
    module_level: bool = False,
) -> ModuleType:
    """Import and return the Python module ``name``; skip the test when it is missing."""
    require_installed(name, how, module_level=module_level)
    return importlib.import_module(name)


def require_folder(name: str, folder: Path, how: str) -> Path:
    """``folder`` (an installed package tree, say), which must exist."""
    if _hidden(name) or not folder.is_dir():
        missing(name, how)
    return folder


def require_postgresql() -> str:
    """The folder of the PostgreSQL server binaries (Debian's ``postgresql`` package)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if _hidden("postgresql") or not found:
        missing("postgresql", SYSTEM_DEPS)
    require_installed("psycopg")
    return os.path.dirname(found[-1])
