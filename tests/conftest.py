"""Fixtures shared by the test modules; plain helpers live in helpers.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from helpers import running
from jwks_server import KeyServer

from wsauth_sync import WebSocketServer


@pytest.fixture
def server() -> Iterator[WebSocketServer]:
    with running() as srv:
        yield srv


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture every wsauth_sync log record, at every level."""
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.fixture
def keys() -> Iterator[KeyServer]:
    """A local JWK Set server on 127.0.0.1 publishing key ``k1`` (see jwks_server.py)."""
    server = KeyServer()
    server.add_key("k1")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgresql() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 for the whole session (see pg.py)."""
    from pg import run_postgres

    yield from run_postgres()
