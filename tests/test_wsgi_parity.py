"""The WSGI middleware answers as the socket server does, host server by host server.

Each row of the README's "What clients see" table is sent as raw bytes, side by side, to
the threaded :class:`~wsauth_sync.WebSocketServer` and to each host server running the
middleware (Werkzeug, Flask, gunicorn gthread and sync, cheroot, ``http.server``). Host
servers join repeated headers with ``","`` or keep only the last one before the
middleware sees them, and refuse some requests themselves: what a host makes impossible
is listed in ``HOST_ANSWERS`` (and in the README) and pinned too.

Then the client address behind proxies: header names with ``_`` cannot replace a trusted
proxy's ``X-Forwarded-For``, and a Unix-socket peer (gunicorn ``--bind unix:``, or
``handle_socket`` with no address) never puts every client in one failed-auth bucket.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    KEY,
    SECRET,
    ServerProcess,
    make_app,
    parse_response,
    read_response,
    running,
    wait_for,
)
from test_wsgi import HOSTS, SECOND, Host

from wsauth_sync import (
    BearerToken,
    ConfigurationError,
    QueryToken,
    StaticTokens,
    SubprotocolToken,
    WebSocketApp,
    handle_socket,
)

ROOT = Path(__file__).resolve().parent.parent
TOKENS_ENV = {"WSAUTH_TOKENS": f"{SECRET},{SECOND}", "PORT": "0"}
UNKNOWN_CLIENT = "client address unknown"


def head(
    *,
    method: str = "GET",
    target: str = f"/ws?token={SECRET}",
    version: str = "HTTP/1.1",
    drop: tuple[str, ...] = (),
    add: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> bytes:
    """A valid handshake, mutated: some headers dropped, others added at the end."""
    base = (
        ("Host", "127.0.0.1"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", KEY),
        ("Sec-WebSocket-Version", "13"),
    )
    lines = [f"{name}: {value}\r\n" for name, value in base if name.lower() not in drop]
    lines += [f"{name}: {value}\r\n" for name, value in add]
    return f"{method} {target} {version}\r\n{''.join(lines)}\r\n".encode("latin-1") + body


def replaced(name: str, value: str, **changes: object) -> bytes:
    return head(drop=(name.lower(),), add=((name, value),), **changes)  # type: ignore[arg-type]


#: (case, request): the rows of the README table, then the header tricks hosts change.
CASES: list[tuple[str, bytes]] = [
    ("valid", head()),
    ("post", head(method="POST")),
    ("http10", head(version="HTTP/1.0")),
    ("no_host", head(drop=("host",))),
    ("two_hosts", head(add=(("Host", "127.0.0.1"),))),
    ("two_hosts_differ", head(add=(("Host", "evil.example"),))),
    ("host_port_comma", replaced("Host", "127.0.0.1:80, evil.example")),
    ("no_upgrade", head(drop=("upgrade",))),
    ("upgrade_h2c", replaced("Upgrade", "h2c")),
    ("no_connection_upgrade", replaced("Connection", "keep-alive")),
    ("two_upgrades", head(add=(("Upgrade", "websocket"),))),
    (
        "two_connections",
        head(drop=("connection",), add=(("Connection", "keep-alive"), ("Connection", "Upgrade"))),
    ),
    ("bad_key", replaced("Sec-WebSocket-Key", "P5l8BJcZwRc=")),
    ("no_key", head(drop=("sec-websocket-key",))),
    ("two_keys", head(add=(("Sec-WebSocket-Key", KEY),))),
    ("no_version", head(drop=("sec-websocket-version",))),
    ("version_8", replaced("Sec-WebSocket-Version", "8")),
    ("two_versions", head(add=(("Sec-WebSocket-Version", "13"),))),
    ("version_list", replaced("Sec-WebSocket-Version", "13, 8")),
    ("content_length", head(add=(("Content-Length", "5"),), body=b"hello")),
    ("chunked", head(add=(("Transfer-Encoding", "chunked"),), body=b"0\r\n\r\n")),
    ("content_length_0", head(add=(("Content-Length", "0"),))),
    ("long_target", head(target="/ws?token=" + "a" * 9000)),
    ("long_header", head(add=(("X-Big", "b" * 9000),))),
    ("many_headers", head(add=tuple((f"X-H{i}", "v") for i in range(130)))),
    ("no_token", head(target="/ws")),
    ("bad_token", head(target="/ws?token=wrong")),
    ("token_twice", head(add=(("Authorization", f"Bearer {SECOND}"),))),
    ("empty_bearer", head(target="/ws", add=(("Authorization", "Bearer "),))),
    (
        "two_authorizations",
        head(
            target="/ws",
            add=(("Authorization", "Bearer wrong"), ("Authorization", f"Bearer {SECRET}")),
        ),
    ),
    ("two_origins", head(add=(("Origin", "http://a.example"), ("Origin", "http://b.example")))),
    ("origin_comma", head(add=(("Origin", "http://a.example, http://b.example"),))),
    ("underscore_version", head(add=(("Sec_WebSocket_Version", "8"),))),
    ("underscore_key", head(add=(("Sec_WebSocket_Key", "P5l8BJcZwRc="),))),
    ("underscore_host", head(add=(("Host_", "evil.example"),))),
]

#: The status each case gets from the socket server: the README table's column.
STATUS = {
    "valid": 101,
    "post": 405,
    "http10": 505,
    "no_host": 400,
    "two_hosts": 400,
    "two_hosts_differ": 400,
    "host_port_comma": 400,
    "no_upgrade": 426,
    "upgrade_h2c": 426,
    "no_connection_upgrade": 426,
    "two_upgrades": 101,
    "two_connections": 101,
    "bad_key": 400,
    "no_key": 400,
    "two_keys": 400,
    "no_version": 400,
    "version_8": 426,
    "two_versions": 400,
    "version_list": 400,
    "content_length": 400,
    "chunked": 400,
    "content_length_0": 101,
    "long_target": 414,
    "long_header": 431,
    "many_headers": 431,
    "no_token": 401,
    "bad_token": 401,
    "token_twice": 400,
    "empty_bearer": 400,
    "two_authorizations": 400,
    "two_origins": 400,
    "origin_comma": 400,
    "underscore_version": 101,
    "underscore_key": 101,
    "underscore_host": 101,
}

#: Rows a host server makes impossible, and what the client gets there instead (README).
#: cheroot keeps only the last of repeated headers that are not lists, so the request
#: the middleware sees has one valid header; http.server answers methods its handler
#: does not define with 501 itself.
_CHEROOT_KEEPS_LAST = (
    "two_hosts",
    "two_hosts_differ",
    "two_keys",
    "two_versions",
    "two_authorizations",
    "two_origins",
)
#: gunicorn before 27 (23 is its last release for Python 3.9) answers a request line over
#: its limit with 400 itself, where 27 says 414.
_GUNICORN_SAYS_400 = int(importlib.metadata.version("gunicorn").split(".")[0]) < 27
HOST_ANSWERS: dict[tuple[str, str], int] = {
    **{("cheroot", case): 101 for case in _CHEROOT_KEEPS_LAST},
    ("http.server", "post"): 501,
    **{
        (host, "long_target"): 400
        for host in ("gunicorn-gthread", "gunicorn-sync")
        if _GUNICORN_SAYS_400
    },
}

#: The sources each example configures (the socket server gets the same).
SOURCES = {"http.server": [QueryToken()], "flask": [QueryToken(), SubprotocolToken()]}
ALL = [QueryToken(), BearerToken(), SubprotocolToken()]


def answer(sock: socket.socket, data: bytes) -> tuple[int | None, dict[str, str]]:
    """Status and telling headers of the response to ``data`` (None: closed, no answer)."""
    with sock:
        sock.settimeout(5)
        try:
            sock.sendall(data)
            raw = read_response(sock, timeout=5)
        except (ConnectionResetError, BrokenPipeError):
            return None, {}
    if raw.startswith(b"HTTP/1.1 101 "):
        return 101, {}
    if not raw:
        return None, {}
    status, headers, _ = parse_response(raw)
    telling = ("www-authenticate", "sec-websocket-version", "allow", "upgrade", "retry-after")
    return status, {name: headers[name] for name in telling if name in headers}


def tcp(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


@contextlib.contextmanager
def host_server(spec: Host, **env: str) -> Iterator[tuple[ServerProcess, int]]:
    process = ServerProcess(spec.command, cwd=str(ROOT), env={**TOKENS_ENV, **env})
    try:
        found = process.expect(spec.ready).group(1)
        yield process, int(found) if found.isdigit() else 0
    finally:
        assert process.stop() == 0, process.output
    assert "Traceback" not in process.output


@pytest.mark.parametrize("spec", HOSTS, ids=[host.name for host in HOSTS])
def test_every_row_gets_the_socket_servers_answer(spec: Host) -> None:
    socket_app = make_app(
        verifier=StaticTokens([SECRET, SECOND]), sources=SOURCES.get(spec.name, ALL)
    )
    differences = []
    with host_server(spec) as (_, port), running(socket_app) as direct:
        for case, data in CASES:
            expected = answer(tcp(direct.address[1]), data)
            if expected[0] != STATUS[case] and spec.name not in SOURCES:  # all sources
                differences.append(f"{case}: socket server {expected}, README {STATUS[case]}")
            got = answer(tcp(port), data)
            if (spec.name, case) in HOST_ANSWERS:
                expected = (HOST_ANSWERS[spec.name, case], got[1])
            if got != expected:
                differences.append(f"{case}: socket server {expected}, {spec.name} {got}")
    assert not differences, "\n".join(differences)


# -- X-Forwarded-For through a trusted proxy ---------------------------------------------


# The hosts that run examples/wsgi_echo.py; gunicorn sync with one worker, so that one
# process holds the failed-auth budget.
def _one_worker(command: list[str]) -> list[str]:
    return [*command[: command.index("-w")], "-w", "1", *command[command.index("-w") + 2 :]]


XFF_HOSTS = [
    Host(h.name, _one_worker(h.command) if h.name == "gunicorn-sync" else h.command, h.ready)
    for h in HOSTS
    if h.name in ("werkzeug", "gunicorn-gthread", "gunicorn-sync", "cheroot")
]


@pytest.mark.parametrize("spec", XFF_HOSTS, ids=[host.name for host in XFF_HOSTS])
def test_underscore_header_cannot_replace_the_proxys_forwarded_for(spec: Host) -> None:
    # The proxy (played here) names the client 10.0.0.7; the client adds its own
    # X_Forwarded_For, which cheroot mapped onto the same environ key, each time a fresh
    # address: a new failed-auth budget per guess, unless the header is ignored.
    statuses = []
    with host_server(spec, WSAUTH_TRUSTED_PROXIES="127.0.0.1") as (_, port):
        for guess in range(21):
            statuses.append(
                answer(
                    tcp(port),
                    head(
                        target="/ws?token=wrong",
                        add=(
                            ("X-Forwarded-For", "10.0.0.7"),
                            ("X_Forwarded_For", f"10.1.{guess}.1"),
                        ),
                    ),
                )[0]
            )
    assert statuses == [401] * 20 + [429]


# -- a Unix-socket peer: gunicorn --bind unix: and handle_socket(sock, None, ...) ---------


def unix(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(path)
    return sock


def from_client(ip: str, token: str) -> bytes:
    return head(target=f"/ws?token={token}", add=(("X-Forwarded-For", ip),))


def assert_buckets_per_client(path: str, *, trusted: bool) -> None:
    """21 bad tokens from one client behind the proxy, then the others' turn."""
    first = [answer(unix(path), from_client("10.0.0.1", "wrong"))[0] for _ in range(21)]
    # Trusted: the client's own budget runs out. Untrusted: no address, no limiter.
    assert first == [401] * 20 + [429 if trusted else 401]
    assert answer(unix(path), from_client("10.0.0.2", SECRET))[0] == 101
    assert answer(unix(path), from_client("10.0.0.2", "wrong"))[0] == 401


@pytest.mark.parametrize("trusted", [True, False], ids=["unix-trusted", "untrusted"])
def test_gunicorn_on_a_unix_socket_keeps_clients_apart(tmp_path: Path, trusted: bool) -> None:
    path = str(tmp_path / "app.sock")
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "gthread",
        "--threads",
        "8",
        "--bind",
        f"unix:{path}",
        "--access-logfile",
        "-",
        "examples.wsgi_echo:app",
    ]
    spec = Host("gunicorn-unix", command, r"Listening at: (unix):")
    env = {"WSAUTH_TRUSTED_PROXIES": "unix"} if trusted else {}
    with host_server(spec, **env) as (process, _):
        assert_buckets_per_client(path, trusted=trusted)
        warned = wait_for(lambda: UNKNOWN_CLIENT in process.output, 5)
    assert warned != trusted
    assert process.output.count(UNKNOWN_CLIENT) == (0 if trusted else 1)


@contextlib.contextmanager
def unix_accept_loop(path: str, app: WebSocketApp) -> Iterator[None]:
    """A bare accept loop on a Unix socket calling ``handle_socket(sock, None, app)``."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    threads: list[threading.Thread] = []

    def loop() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return  # closed: stop
            thread = threading.Thread(target=handle_socket, args=(sock, None, app))
            thread.start()
            threads.append(thread)

    acceptor = threading.Thread(target=loop)
    acceptor.start()
    try:
        yield
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        acceptor.join(5)
        for thread in threads:
            thread.join(5)


@pytest.mark.parametrize("trusted", [True, False], ids=["unix-trusted", "untrusted"])
def test_handle_socket_without_an_address_keeps_clients_apart(
    tmp_path: Path, trusted: bool, logs: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "ws.sock")
    app = make_app(trusted_proxies=["unix"] if trusted else [])
    with unix_accept_loop(path, app):
        assert_buckets_per_client(path, trusted=trusted)
    warnings = [r for r in logs.records if UNKNOWN_CLIENT in r.getMessage()]
    assert len(warnings) == (0 if trusted else 1)


@pytest.mark.parametrize("proxies", [["localhost"], "127.0.0.1", ["10.0.0.0/8"], [""]])
def test_trusted_proxies_are_validated_at_configuration(proxies: object) -> None:
    with pytest.raises(ConfigurationError):
        make_app(trusted_proxies=proxies)
