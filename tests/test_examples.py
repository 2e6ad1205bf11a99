"""Each example runs exactly as its docstring and the README say, from the repository root.

The commands are read from the examples' docstrings (and the README's must be among
them), then run as a user would: ``python`` is this interpreter, the port is a free one.
"""

from __future__ import annotations

import ast
import os
import queue
import re
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ServerProcess, handshake_bytes, read_response
from websockets.sync.client import connect

import wsauth_sync

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
READY = r"(?:Listening on|Listening at:|Running on) (?:http|ws)://127\.0\.0\.1:(\d+)"
#: What each host puts in ``Connection`` on a 401 (the README's "What clients see").
CONNECTION_ON_ERROR = {
    "echo_server.py": "close",
    "stdlib_echo.py": "close",
    "wsgi_echo.py": "close",
    "flask_echo.py": "close",
    "gunicorn": "keep-alive",
    "cheroot_echo.py": None,
}


def docstring_commands(path: Path) -> list[str]:
    """The shell commands in an example's docstring (indented lines, ``\\`` continued)."""
    text = ast.get_docstring(ast.parse(path.read_text())) or ""
    text = text.replace("\\\n", " ")
    return [
        line.split(" # ")[0].strip()
        for line in text.splitlines()
        if line.startswith("    ") and ("python" in line or "gunicorn" in line)
    ]


@pytest.fixture(scope="module", autouse=True)
def installed_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Let the examples import wsauth_sync as installed, but not the repository root.

    A user's ``python examples/x.py`` finds only the installed package; a PYTHONPATH
    naming the root (as the test runs may use) would hide a broken import.
    """
    site = tmp_path_factory.mktemp("site")
    (site / "wsauth_sync").symlink_to(Path(wsauth_sync.__file__).parent)
    patch = pytest.MonkeyPatch()
    patch.setenv("PYTHONPATH", str(site))
    yield
    patch.undo()


def runnable(command: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment for ``command``, on a free port, with this interpreter."""
    words = shlex.split(command, comments=True)
    env = {"PORT": "0"}
    while "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    program = {"python": [sys.executable], "gunicorn": [sys.executable, "-m", "gunicorn"]}
    argv = program[words[0]] + [
        re.sub(r"^127\.0\.0\.1:\d+$", "127.0.0.1:0", word) for word in words[1:]
    ]
    return argv, env


def server_commands() -> list[tuple[str, str]]:
    return [
        (path.name, command)
        for path in EXAMPLES
        for command in docstring_commands(path)
        if "WSAUTH_TOKENS=" in command
    ]


def test_every_example_documents_its_command() -> None:
    documented = {name for name, _ in server_commands()}
    assert documented == {path.name for path in EXAMPLES if path.name != "__init__.py"}


def test_the_readme_commands_are_the_documented_ones() -> None:
    readme = (ROOT / "README.md").read_text()
    mentioned = re.findall(
        r"^(WSAUTH_TOKENS=\S+ python examples/\S+\.py)$", readme, flags=re.MULTILINE
    )
    assert len(mentioned) >= 5
    every = {command for _, command in server_commands()}
    assert set(mentioned) <= every


@pytest.mark.parametrize(
    ("example", "command"),
    server_commands(),
    ids=[" ".join(c.split()[1:3]) for _, c in server_commands()],
)
def test_example_runs_as_documented(example: str, command: str) -> None:
    argv, env = runnable(command)
    token = env["WSAUTH_TOKENS"].split(",")[0]
    server = ServerProcess(argv, env=env, cwd=str(ROOT))
    try:
        port = int(server.expect(READY).group(1))
        with connect(f"ws://127.0.0.1:{port}/ws?token={token}", open_timeout=5) as ws:
            welcome = ws.recv(timeout=5)
            assert isinstance(welcome, str) and welcome.startswith("Welcome")
            ws.send("as documented")
            assert ws.recv(timeout=5) == "You said: as documented"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(handshake_bytes("/ws"))
            head = read_response(sock).split(b"\r\n\r\n")[0].decode()
        assert head.startswith("HTTP/1.1 401 ")
        connection = re.search(r"(?im)^connection:\s*(\S+)", head)
        host = "gunicorn" if "gunicorn" in command else example
        assert (connection.group(1).lower() if connection else None) == CONNECTION_ON_ERROR[host]
        for client in docstring_commands(ROOT / "examples" / example):
            if "WSAUTH_TOKENS=" not in client:  # a client command: run it against this server
                run_client(client.replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
    finally:
        assert server.stop() == 0, server.output
    assert "Traceback" not in server.output


def run_client(command: str) -> None:
    """Run a documented client command, type one line, and see the echo (bounded)."""
    argv, _ = runnable(command)
    client = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=str(ROOT),
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert client.stdout is not None
        with client.stdout:  # closed at its end, so no pipe outlives the client
            for line in client.stdout:
                lines.put(line)

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    seen: list[str] = []
    try:
        for expected, then_type in (("< Welcome", "hello\n"), ("< You said: hello", None)):
            while not any(expected in line for line in seen):
                seen.append(lines.get(timeout=10))
            if then_type and client.stdin:
                client.stdin.write(then_type)
                client.stdin.flush()
        assert client.stdin is not None
        client.stdin.close()
        assert client.wait(timeout=10) == 0
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(5)
        if client.stdin is not None:
            client.stdin.close()
        pumper.join(5)


@pytest.mark.parametrize(
    ("example", "command"),
    server_commands(),
    ids=[" ".join(c.split()[1:3]) for _, c in server_commands()],
)
def test_missing_configuration_is_one_clear_message(example: str, command: str) -> None:
    argv, env = runnable(command)
    env = {**os.environ, **env, "WSAUTH_TOKENS": ""}
    result = subprocess.run(
        argv, env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=30
    )
    message = f"examples/{example}: set WSAUTH_TOKENS to one or more comma-separated tokens"
    # gunicorn reports its worker's boot failure (status 3) and stops instead of retrying.
    assert result.returncode == (3 if "gunicorn" in command else 2)
    assert result.stderr.count(message) == 1, result.stderr
    assert "Traceback" not in result.stderr
    if "gunicorn" not in command:  # gunicorn's master listens before its worker loads the app
        assert "Listening" not in result.stdout + result.stderr


def test_listening_is_printed_only_once_listening() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "examples/echo_server.py"],
            cwd=str(ROOT),
            env={**os.environ, "WSAUTH_TOKENS": "t0k3n", "PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode != 0
    assert "Address already in use" in result.stderr
    assert "Listening" not in result.stdout + result.stderr
