"""The examples work as documented."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from helpers import running, ws_url
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> object:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_echo_server_example() -> None:
    example = load("echo_server")
    with running(example.app) as server:  # type: ignore[attr-defined]
        token = example.TOKEN  # type: ignore[attr-defined]
        with connect(ws_url(server), subprotocols=["bearer", token],  # type: ignore[list-item]
                     open_timeout=3) as ws:
            assert ws.recv(timeout=3) == "Welcome! You are authenticated as demo-user."
            ws.send("hi")
            assert ws.recv(timeout=3) == "You said: hi"
        with pytest.raises(InvalidStatus) as info:
            connect(ws_url(server), open_timeout=3)
        assert info.value.response.status_code == 401
