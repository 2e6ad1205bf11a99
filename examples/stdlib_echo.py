"""The standard library's ``http.server`` handing upgrade requests to wsauth_sync.

``http.server`` parses the request head itself, so it uses ``handle_request()``, the
entry point for a head that has already been read; other paths stay ordinary handlers.

    WSAUTH_TOKENS=secret-one python examples/stdlib_echo.py

Tokens come from ``WSAUTH_TOKENS`` (comma-separated); ``PORT`` changes the port.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from wsauth_sync import (
    QueryToken,
    StaticTokens,
    UpgradeRequest,
    WebSocketApp,
    handle_request,
    take_buffered,
)
from wsauth_sync.core.audit import redact_message
from wsauth_sync.echo import echo

TOKENS = [
    token.strip() for token in os.environ.get("WSAUTH_TOKENS", "").split(",") if token.strip()
]
if not TOKENS:
    print(
        "examples/stdlib_echo.py: set WSAUTH_TOKENS to one or more comma-separated tokens",
        file=sys.stderr,
    )
    sys.exit(2)
ws_app = WebSocketApp({"/ws": echo}, verifier=StaticTokens(TOKENS), sources=[QueryToken()])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.partition("?")[0] in ws_app.routes:
            request = UpgradeRequest.from_fields(
                method=self.command,
                target=self.path,
                headers=self.headers.items(),
                http_version=self.request_version,
                client=self.client_address[:2],
            )
            handle_request(
                self.connection,
                request,
                ws_app,
                buffered=take_buffered(self.rfile, self.connection),
            )
            self.close_connection = True  # the socket is done with HTTP
            return
        body = b"http.server is serving HTTP; the echo WebSocket is at /ws\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # http.server logs request lines, query string included: redact the token
        # parameters in its arguments (the request line is parsed), then in the line.
        super().log_message("%s", redact_message(format, args))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8000"))), Handler)
    server.daemon_threads = True
    print(f"Listening on http://127.0.0.1:{server.server_port}", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()
