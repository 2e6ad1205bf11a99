"""The echo WebSocket under cheroot (CherryPy's threaded WSGI server).

cheroot hides its socket from WSGI apps; its pluggable gateway class is the way in.

    WSAUTH_TOKENS=secret-one python examples/cheroot_echo.py
"""

from __future__ import annotations

import os
import signal

from cheroot.wsgi import Server

from examples.wsgi_echo import app
from wsauth_sync.cheroot_gateway import CherootGateway

if __name__ == "__main__":
    server = Server(("127.0.0.1", int(os.environ.get("PORT", "8000"))), app, numthreads=40)
    server.gateway = CherootGateway  # offers the socket to the middleware
    server.prepare()
    print(f"Listening on http://127.0.0.1:{server.bind_addr[1]}", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C
    try:
        server.serve()
    except KeyboardInterrupt:
        server.stop()
