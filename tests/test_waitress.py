"""waitress exposes no socket to the application: a clear 501, and an ERROR line naming
the servers that work, while the rest of the application is served as before."""

from __future__ import annotations

import signal
import socket
import sys
import urllib.request
from pathlib import Path

from helpers import SECRET, ServerProcess, free_port, handshake_bytes, parse_response
from needs import require_installed

ROOT = Path(__file__).resolve().parent.parent


def test_waitress_refuses_the_upgrade_with_501_and_names_the_supported_servers() -> None:
    require_installed("waitress")
    port = free_port()
    process = ServerProcess(
        [sys.executable, "-m", "waitress", f"--listen=127.0.0.1:{port}", "examples.wsgi_echo:app"],
        cwd=str(ROOT),
        env={"WSAUTH_TOKENS": SECRET},
    )
    try:
        process.expect(rf"Serving on http://127\.0\.0\.1:{port}")
        answers = []
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(handshake_bytes(f"/ws?token={SECRET}"))
                sock.shutdown(socket.SHUT_WR)
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            answers.append(parse_response(data))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert page.status == 200
        errors = process.expect(r"ERROR WSGI server 'waitress' gives no access").string
    finally:
        # waitress installs no SIGTERM handler: the default action ends it.
        assert process.stop() in (0, -signal.SIGTERM), process.output
    assert [(status, body) for status, _, body in answers] == [(501, b"501 Not Implemented\n")] * 2
    for server in ("Werkzeug", "gunicorn", "cheroot", "gevent.pywsgi", "eventlet", "uWSGI"):
        assert server in errors
    assert process.output.count("gives no access") == 1  # once per server, not per request
    assert "reason=no_socket_takeover" in process.output
    assert SECRET not in process.output and "Traceback" not in process.output
