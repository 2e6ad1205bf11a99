"""The README's set-up commands are the ones CI runs; its samples are what commands print."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section, flags=re.DOTALL)


def test_readme_gives_exactly_two_setup_commands() -> None:
    commands = setup_commands()
    assert len(commands) == 2
    assert all("\n" not in command for command in commands)
    assert "wsauth_sync echo" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command() -> None:
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert setup_commands()[1] in ci_lines


def readme_block(after: str) -> list[str]:
    """The lines of the first fenced block that follows the text ``after``."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split(after, 1)[1].split("```", 2)[1]
    return block.split("\n")[1:-1]


def as_pattern(line: str) -> str:
    """A README sample line as a regex: elided tokens, ports and times may vary."""
    pattern = re.escape(line)
    pattern = re.sub(r"Jm1\\\.\\\.\\\.", r"[\\w-]{32}", pattern)
    pattern = re.sub(r"127\\\.0\\\.0\\\.1:\d+", r"127\\.0\\.0\\.1:\\d+", pattern)
    stamp = r"\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d,\\d{3}"
    return re.sub(r"2026\\-12\\-02\\ 16:30:07,412", stamp, pattern)


def test_the_readme_samples_are_what_the_echo_command_prints() -> None:
    import socket
    import subprocess
    import sys

    from helpers import ServerProcess, read_until_closed

    startup = readme_block("how to connect with it (the browser demo only when the page")
    assert startup[0] == "$ python -m wsauth_sync echo"
    curl = readme_block("**curl**, to see a refusal:")
    response = "\r\n".join(curl[2:]) + "\n"  # after the two lines of the curl command
    (log_line,) = readme_block("and on the server:")
    env = {"WSAUTH_TOKENS": "", "WSAUTH_JWT_SECRET": "", "WSAUTH_KEYS_DB": ""}
    server = ServerProcess([sys.executable, "-m", "wsauth_sync", "echo", "--port", "0"], env=env)
    try:
        server.expect("^Press Ctrl-C to stop")
        printed = [line for line in server.lines if not re.match(r"\d{4}-", line)]
        assert len(printed) == len(startup) - 1
        for sample, line in zip(startup[1:], printed):
            assert re.fullmatch(as_pattern(sample), line), (sample, line)
        port = int(printed[0].rsplit(":", 1)[1].split("/")[0])
        request = (
            "GET /ws?token=wrong HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(request.encode())
            assert read_until_closed(sock, timeout=5).decode() == response
        logged = server.expect("rejected peer=").string
        assert re.fullmatch(as_pattern(log_line), logged), (log_line, logged)
    finally:
        assert server.stop() == 0
    assert (
        subprocess.run(
            [sys.executable, "-m", "wsauth_sync", "echo", "--port", "70000"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stderr.strip()
        == readme_block("and exit status 2:")[1]
    )
