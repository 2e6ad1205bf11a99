"""Debian's nginx in front of the threaded server, with examples/deploy/nginx.conf.

The fixture copies the shipped config, swapping only its ports and file paths, starts
nginx on 127.0.0.1 in the foreground, and stops it by PID.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
import websocket as wsclient  # websocket-client
from helpers import (
    SECRET,
    free_port,
    handshake_bytes,
    main_python_only,
    make_app,
    parse_response,
    read_response,
    running,
    wait_for,
)
from needs import require_tool
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from wsauth_sync import BearerToken, QueryToken, WebSocketServer
from wsauth_sync.echo import WELCOME
from wsauth_sync.guards import FailedAuthLimiter

pytestmark = main_python_only("nginx")
CONFIG = Path(__file__).resolve().parent.parent / "examples" / "deploy" / "nginx.conf"


@dataclass
class Proxy:
    http_port: int
    https_port: int
    access_log: Path
    ca: trustme.CA
    app_server: WebSocketServer

    def url(self, tls: bool = False) -> str:
        return (
            f"wss://127.0.0.1:{self.https_port}/ws"
            if tls
            else f"ws://127.0.0.1:{self.http_port}/ws"
        )

    def client_tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    nginx = require_tool("nginx", candidates=("/usr/sbin/nginx",))
    folder = tmp_path_factory.mktemp("nginx")
    os.chmod(folder, 0o755)  # nginx workers (nobody) read the certificate
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(folder / "cert.pem")
    cert.private_key_pem.write_to_path(folder / "key.pem")
    app = make_app(
        sources=[QueryToken(), BearerToken()],
        trusted_proxies=["127.0.0.1"],
        limiter=FailedAuthLimiter(rate=0.01, burst=1),
    )
    with running(app) as app_server:
        http_port, https_port = free_port(), free_port()
        text = CONFIG.read_text()
        for old, new in (
            ("127.0.0.1:8765", f"127.0.0.1:{app_server.address[1]}"),
            ("127.0.0.1:8080", f"127.0.0.1:{http_port}"),
            ("127.0.0.1:8443", f"127.0.0.1:{https_port}"),
            ("/etc/ssl/wsauth", str(folder)),
            ("/var/log/nginx", str(folder)),
            ("/run/wsauth-nginx.pid", str(folder / "nginx.pid")),
        ):
            assert old in text, f"{old} is no longer in the shipped config"
            text = text.replace(old, new)
        (folder / "nginx.conf").write_text(text)
        process = subprocess.Popen(
            [nginx, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", "daemon off;"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    socket.create_connection(("127.0.0.1", https_port), timeout=1).close()
                    break
                except OSError:
                    assert process.poll() is None, process.stdout.read()  # type: ignore[union-attr]
                    assert time.monotonic() < deadline, "nginx did not start"
                    time.sleep(0.05)
            yield Proxy(http_port, https_port, folder / "wsauth-access.log", ca, app_server)
        finally:
            process.terminate()
            process.communicate(timeout=15)  # waits, and closes the pipe


def test_upgrade_is_proxied(proxy: Proxy) -> None:
    with connect(f"{proxy.url()}?token={SECRET}", open_timeout=5) as ws:
        assert ws.recv(timeout=5) == WELCOME
        ws.send("through nginx")
        assert ws.recv(timeout=5) == "You said: through nginx"


def test_tls_terminates_at_nginx(proxy: Proxy) -> None:
    # websocket-client makes every SSL call from one thread (see tests/test_tls.py).
    with contextlib.closing(
        wsclient.create_connection(
            proxy.url(tls=True),
            sslopt={"context": proxy.client_tls()},
            header=[f"Authorization: Bearer {SECRET}"],
            timeout=5,
        )
    ) as ws:
        assert ws.recv() == WELCOME
        ws.send_binary(b"\x00" * 100_000)
        assert ws.recv() == b"\x00" * 100_000


def from_address(source_ip: str, port: int) -> socket.socket:
    """A connection from a loopback address of its own (each client has its own budget)."""
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source_ip, 0))


def test_401_passes_through_unchanged(proxy: Proxy) -> None:
    with pytest.raises(InvalidStatus) as via_nginx:
        connect(proxy.url(), sock=from_address("127.0.0.4", proxy.http_port), open_timeout=5)
    with pytest.raises(InvalidStatus) as direct:
        host, port = proxy.app_server.address
        connect(f"ws://{host}:{port}/ws", sock=from_address("127.0.0.5", port), open_timeout=5)
    for info in (via_nginx, direct):
        response = info.value.response
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="wsauth"'
        assert response.body == b"401 Unauthorized\n"


def test_forwarded_for_from_the_trusted_proxy_names_the_client(proxy: Proxy) -> None:
    def attempt(source_ip: str, spoof: str = "") -> int:
        with socket.create_connection(
            ("127.0.0.1", proxy.http_port), timeout=5, source_address=(source_ip, 0)
        ) as sock:
            extra = f"X-Forwarded-For: {spoof}\r\n" if spoof else ""
            sock.sendall(handshake_bytes("/ws?token=wrong", extra=extra))
            return parse_response(read_response(sock, timeout=5))[0]

    # The limiter allows one failure per client: nginx's X-Forwarded-For tells them apart,
    # and a header the client made up itself does not give it a fresh budget.
    assert attempt("127.0.0.2") == 401
    assert attempt("127.0.0.2", spoof="203.0.113.9") == 429
    assert attempt("127.0.0.3") == 401


def test_no_token_in_the_proxy_access_log(proxy: Proxy) -> None:
    with connect(
        f"{proxy.url()}?token={SECRET}",
        open_timeout=5,
        sock=from_address("127.0.0.6", proxy.http_port),
    ) as ws:
        ws.recv(timeout=5)
    # nginx writes the line when the proxied connection ends.
    assert wait_for(lambda: '"GET /ws HTTP/1.1" 101' in proxy.access_log.read_text(), 5)
    assert SECRET not in proxy.access_log.read_text()
