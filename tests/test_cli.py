"""The ``wsauth-sync echo`` command, run as a real subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from helpers import SECRET
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from wsauth_sync.echo import WELCOME


class Echo:
    """A running ``echo`` command whose output lines are read by a background thread."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        for stream, sink in ((self.process.stdout, self.lines.put),
                             (self.process.stderr, self.stderr.append)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _pump(stream: object, sink: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            sink(line.rstrip("\n"))  # type: ignore[operator]

    def expect(self, prefix: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line starting {prefix!r}; stderr: {self.stderr}") \
                    from None
            if line.startswith(prefix):
                return line[len(prefix):]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
            raise


@contextlib.contextmanager
def echo_command(*args: str, program: list[str] | None = None) -> Iterator[Echo]:
    command = (program or [sys.executable, "-m", "wsauth_sync"]) + [
        "echo", "--port", "0", *args]
    running = Echo(command)
    try:
        yield running
    finally:
        running.stop()


def test_demo_token_url_is_printed_and_serves_one_echo() -> None:
    with echo_command() as server:
        listening = server.expect("Listening on ")
        assert listening.startswith("ws://127.0.0.1:") and listening.endswith("/ws")
        url = server.expect("Connect with: ")
        assert url.startswith(listening + "?token=")
        with connect(url, open_timeout=5) as ws:
            assert ws.recv(timeout=5) == WELCOME
            ws.send("from the cli test")
            assert ws.recv(timeout=5) == "You said: from the cli test"
        with pytest.raises(InvalidStatus) as info:
            connect(listening, open_timeout=5)
        assert info.value.response.status_code == 401
        demo_token = url.split("?token=", 1)[1]
        assert len(demo_token) >= 32
    assert server.process.returncode == 0
    log = "\n".join(server.stderr)
    assert "accepted peer=127.0.0.1:" in log
    assert "rejected peer=127.0.0.1:" in log and "reason=missing_token" in log
    assert demo_token not in log


def test_static_tokens_and_options() -> None:
    with echo_command("--token", SECRET, "--token", "second-token-value", "--path", "/chat",
                      "--source", "bearer", "--max-message-size", "100") as server:
        listening = server.expect("Listening on ")
        assert listening.endswith("/chat")
        with connect(listening, additional_headers={"Authorization": "Bearer second-token-value"},
                     open_timeout=5) as ws:
            assert ws.recv(timeout=5) == WELCOME
            ws.send("x" * 200)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        with pytest.raises(InvalidStatus) as refused:  # query source not enabled
            connect(f"{listening}?token={SECRET}", open_timeout=5)
        assert refused.value.response.status_code == 401
    assert all(SECRET not in line for line in server.stderr)


def test_jwt_secret_flag() -> None:
    secret = "j" * 32
    token = jwt.encode({"sub": "carol", "exp": int(time.time()) + 60, "aud": "echo"}, secret,
                       algorithm="HS256")
    with echo_command("--jwt-secret", secret, "--jwt-audience", "echo") as server:
        listening = server.expect("Listening on ")
        with connect(listening, subprotocols=["bearer", token],  # type: ignore[list-item]
                     open_timeout=5) as ws:
            assert ws.subprotocol == "bearer"
            assert ws.recv(timeout=5) == WELCOME
    assert any("subject=carol" in line for line in server.stderr)


def test_console_script_runs_the_same_server() -> None:
    # pip puts the script beside the interpreter, whether or not that is on PATH.
    program = Path(sys.executable).parent / "wsauth-sync"
    assert program.exists(), "the README's install step provides the console script"
    with echo_command("--token", SECRET, program=[str(program)]) as server:
        listening = server.expect("Listening on ")
        with connect(f"{listening}?token={SECRET}", open_timeout=5) as ws:
            assert ws.recv(timeout=5) == WELCOME


def test_bad_configuration_exits_2_with_a_message() -> None:
    result = subprocess.run([sys.executable, "-m", "wsauth_sync", "echo", "--port", "0",
                             "--jwt-secret", "short"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert "at least 32 bytes" in result.stderr
