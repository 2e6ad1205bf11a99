"""What the command line says about its input: errors, --help, --version, secrets, keys.

Every bad input is one line on stderr naming the flag, the value and what is wrong, with
exit status 2; secrets can stay off the command line, which any local user can read.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import SECRET, ServerProcess
from websockets.sync.client import connect

import wsauth_sync
from wsauth_sync.echo import WELCOME

CLI = [sys.executable, "-m", "wsauth_sync"]
CLEAN_ENV = {**os.environ, "WSAUTH_TOKENS": "", "WSAUTH_JWT_SECRET": "", "WSAUTH_KEYS_DB": ""}


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
        env={**CLEAN_ENV, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def one_line_error(result: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])


BAD_INPUT = [
    (("echo", "--port", "70000"), ("--port", "70000", "not a TCP port")),
    (("echo", "--port", "-1"), ("--port", "-1", "not a TCP port")),
    (("echo", "--max-message-size", "0"), ("--max-message-size", "'0'", "positive")),
    (("echo", "--handshake-timeout", "nan"), ("--handshake-timeout", "nan", "positive")),
    (("echo", "--max-connections", "-3"), ("--max-connections", "-3", "positive")),
    (("echo", "--path", "ws"), ("--path", "'ws'", "starting with /")),
    (("echo", "--allow-origin", "app.example"), ("--allow-origin", "app.example", "origin")),
    (("echo", "--source", "url"), ("--source", "'url'", "invalid choice")),
    (("echo", "--certfile", "missing.pem"), ("--certfile", "missing.pem", "No such file")),
    (("echo", "--token-file", "missing.txt"), ("--token-file", "missing.txt", "No such file")),
    (("echo", "--jwt-secret", "short"), ("--jwt-secret", "at least 32 bytes")),
    (("echo", "--source", "cookie"), ("--source cookie", "--allow-origin")),
    (("echo", "--keys-db", "typo.db"), ("--keys-db", "typo.db", "no key store")),
    (("echo", "--token", "a-token", "--jwt-secret", "j" * 32), ("--token", "--jwt-secret")),
    (("--bogus",), ("wsauth-sync:", "'--bogus'", "unrecognized")),
    (("echo", "--bogus"), ("wsauth-sync echo:", "'--bogus'", "unrecognized")),
    (("keys", "list", "--bogus"), ("wsauth-sync keys list:", "'--bogus'", "unrecognized")),
    ((), ("choose a command",)),
    (("keys",), ("choose an action",)),
    (("keys", "list"), ("--db", "WSAUTH_KEYS_DB")),
    (("keys", "list", "--db", "typo.db"), ("--db", "typo.db", "no key store")),
    (
        ("keys", "create", "bot", "--db", "k.db", "--expires", "2020-01-01"),
        ("--expires", "2020-01-01", "passed"),
    ),
    (
        ("keys", "create", "bot", "--db", "k.db", "--expires", "soon"),
        ("--expires", "soon", "not a duration"),
    ),
]


@pytest.mark.parametrize(("args", "parts"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_naming_the_flag(
    args: tuple[str, ...], parts: tuple[str, ...], tmp_path: Path
) -> None:
    one_line_error(run(*args, cwd=tmp_path), *parts)
    assert not (tmp_path / "typo.db").exists() and not (tmp_path / "k.db").exists()


def test_certificate_that_is_not_pem_or_does_not_match(tmp_path: Path) -> None:
    import trustme

    (tmp_path / "junk.pem").write_text("not a certificate\n")
    one_line_error(
        run("echo", "--port", "0", "--certfile", str(tmp_path / "junk.pem")),
        "--certfile",
        "junk.pem",
        "no PEM certificate",
    )
    ca = trustme.CA()
    one, other = ca.issue_cert("127.0.0.1"), ca.issue_cert("127.0.0.1")
    one.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    other.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    one_line_error(
        run(
            "echo",
            "--port",
            "0",
            "--certfile",
            str(tmp_path / "cert.pem"),
            "--keyfile",
            str(tmp_path / "cert.pem"),
        ),
        "--keyfile",
        "cert.pem",
        "no PEM private key",
    )
    one_line_error(
        run(
            "echo",
            "--port",
            "0",
            "--certfile",
            str(tmp_path / "cert.pem"),
            "--keyfile",
            str(tmp_path / "key.pem"),
        ),
        "--certfile",
        "cert.pem",
        "key.pem",
        "VALUES_MISMATCH",
    )


def test_version() -> None:
    result = run("--version")
    assert (result.returncode, result.stdout) == (0, f"wsauth-sync {wsauth_sync.__version__}\n")
    setup = (Path(__file__).resolve().parent.parent / "setup.cfg").read_text()
    assert "version = attr: wsauth_sync.__version__" in setup


@pytest.mark.parametrize(
    "command", [(), ("echo",), ("keys",), ("keys", "create"), ("keys", "list"), ("keys", "revoke")]
)
def test_help_documents_every_flag_with_its_default(command: tuple[str, ...]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0
    text = result.stdout
    assert "``" not in text and ":class:" not in text
    # Each option line (``  --flag ...``) is followed by its help on the same line or the next.
    options = re.findall(
        r"^  (-[-\w]+)[^\n]*?(?:  +(\S[^\n]*))?\n((?:   +\S[^\n]*\n)*)", text, flags=re.MULTILINE
    )
    assert options
    for flag, same_line, following in options:
        assert (same_line + following).strip(), f"{flag} has no help"
    if command == ("echo",):
        flat = " ".join(text.split())
        for default in (
            "(default: 127.0.0.1)",
            "(default: 8080)",
            "(default: /ws)",
            "(default: 1048576)",
            "(default: 10.0)",
            "(default: 256)",
        ):
            assert default in flat
        assert "WSAUTH_TOKENS" in flat and "--token-file" in flat and "--jwt-secret-file" in flat


def cmdline(process: subprocess.Popen[str]) -> bytes:
    return Path(f"/proc/{process.pid}/cmdline").read_bytes()


def echo_with(args: list[str], env: dict[str, str], secret: str, connect_token: str) -> None:
    """Start ``echo``; the secret is not in its command line, and the token connects."""
    server = ServerProcess([*CLI, "echo", "--port", "0", *args], env={**CLEAN_ENV, **env})
    try:
        url = server.expect(r"^Listening on (\S+)").group(1)
        assert secret.encode() not in cmdline(server.process)
        with connect(f"{url}?token={connect_token}", open_timeout=5) as ws:
            assert ws.recv(timeout=5) == WELCOME
    finally:
        assert server.stop() == 0
    assert not any(secret in line for line in server.lines)


def test_tokens_from_a_file_or_the_environment(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text(f"{SECRET}\n\nsecond-token-value\n")
    echo_with(["--token-file", str(tmp_path / "tokens")], {}, SECRET, "second-token-value")
    echo_with([], {"WSAUTH_TOKENS": f"other-token, {SECRET}"}, SECRET, SECRET)


def test_jwt_secret_from_a_file_or_the_environment(tmp_path: Path) -> None:
    import jwt

    secret = "a-jwt-secret-of-more-than-32-bytes!"
    token = jwt.encode({"sub": "erin", "exp": int(time.time()) + 60}, secret, algorithm="HS256")
    (tmp_path / "jwt-secret").write_text(secret + "\n")
    echo_with(["--jwt-secret-file", str(tmp_path / "jwt-secret")], {}, secret, token)
    echo_with([], {"WSAUTH_JWT_SECRET": secret}, secret, token)


def test_keys_db_from_a_file_or_the_environment(tmp_path: Path) -> None:
    store = str(tmp_path / "keys.db")
    created = run("keys", "create", "bot", env={"WSAUTH_KEYS_DB": store})
    assert created.returncode == 0 and "Created the key store" in created.stderr
    key = created.stdout.strip()
    (tmp_path / "dsn").write_text(store + "\n")
    echo_with(["--keys-db-file", str(tmp_path / "dsn")], {}, store, key)
    echo_with([], {"WSAUTH_KEYS_DB": store}, store, key)
    listed = run("keys", "list", "--db-file", str(tmp_path / "dsn"))
    assert listed.returncode == 0 and " bot " in listed.stdout


def test_keys_table_is_aligned_and_shows_expired_and_revoked(tmp_path: Path) -> None:
    db = str(tmp_path / "keys.db")
    first = run("keys", "create", "billing-bot", "--scope", "echo", "--scope", "admin", "--db", db)
    assert first.returncode == 0
    assert first.stderr.startswith(f"Created the key store {db}\n")
    short = run("keys", "create", "x", "--expires", "1s", "--db", db)
    assert short.returncode == 0 and "Created the key store" not in short.stderr
    later = run("keys", "create", "a-much-longer-owner-name", "--expires", "7d", "--db", db)
    revoked_id = re.search(r"Created key (\w+)", later.stderr).group(1)  # type: ignore[union-attr]
    assert run("keys", "revoke", revoked_id, "--db", db).returncode == 0
    again = run("keys", "revoke", revoked_id, "--db", db)
    assert again.returncode == 1 and again.stderr.count("\n") == 1
    assert f"{revoked_id}: no active key" in again.stderr
    deadline = time.monotonic() + 10
    while "expired" not in (listing := run("keys", "list", "--db", db).stdout):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    rows = listing.splitlines()
    assert rows[0].split() == [
        "ID",
        "OWNER",
        "SCOPES",
        "CREATED",
        "EXPIRES",
        "LAST",
        "USED",
        "STATUS",
    ]
    assert [row.split()[-1] for row in rows[1:]] == ["active", "expired", "revoked"]
    assert "echo,admin" in rows[1]
    for column in ("OWNER", "SCOPES", "CREATED", "EXPIRES", "LAST USED", "STATUS"):
        start = rows[0].index(column)
        assert all(row[start - 2 : start] == "  " and row[start] != " " for row in rows[1:]), column


@pytest.mark.parametrize("expires", ["2999-01-01T00:00Z", "2999-01-01T02:00+02:00"])
def test_expires_takes_back_the_time_keys_list_prints(expires: str, tmp_path: Path) -> None:
    """``keys list`` prints ``...T00:00Z``; ``--expires`` reads that form on every Python."""
    db = str(tmp_path / "keys.db")
    created = run("keys", "create", "bot", "--expires", expires, "--db", db)
    assert created.returncode == 0, created.stderr
    row = run("keys", "list", "--db", db).stdout.splitlines()[1].split()
    assert row[4:] == ["2999-01-01T00:00Z", "-", "active"]
