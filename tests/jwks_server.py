"""A JWKS endpoint on 127.0.0.1 whose keys, failures and delays a test controls."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

#: What the endpoint can answer besides the key set (``KeyServer.answer``).
ANSWERS = ("keys", "garbage", "empty", "other_family", "not_an_object", "drop")


class KeyServer:
    """A JWKS endpoint whose answers a test switches: status, hang, garbage, refusal.

    ``fetches`` counts every request that reached the endpoint, whatever it was answered.
    """

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.status = 200
        self.answer = "keys"
        self.hang = threading.Event()  # set: requests wait until released
        self.release = threading.Event()
        self.arrived = threading.Event()  # set by every request, for tests that wait on one
        self._count_lock = threading.Lock()
        self._fetches = 0
        self.refused = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.count()
                if outer.hang.is_set():
                    outer.release.wait(10)
                if outer.answer == "drop":
                    self.close_connection = True
                    return  # no status line: the client reads a closed connection
                body = outer.body()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_port
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def fetches(self) -> int:
        with self._count_lock:
            return self._fetches

    def count(self) -> None:
        with self._count_lock:
            self._fetches += 1
        self.arrived.set()

    def body(self) -> bytes:
        if self.answer == "garbage":
            return b'{"keys": [{"kty": "RSA", '  # cut short: not JSON
        if self.answer == "not_an_object":
            return b'["keys"]'
        if self.answer == "empty":
            return b'{"keys": []}'
        if self.answer == "other_family":
            key = ec.generate_private_key(ec.SECP256R1()).public_key()
            jwk = jwt.algorithms.ECAlgorithm.to_jwk(key, as_dict=True)
            return json.dumps({"keys": [{**jwk, "kid": "ec1", "alg": "ES256"}]}).encode()
        return json.dumps(
            {
                "keys": [
                    {
                        **jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True),
                        "kid": kid,
                        "alg": "RS256",
                        "use": "sig",
                    }
                    for kid, key in self.keys.items()
                ]
            }
        ).encode()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    def add_key(self, kid: str) -> rsa.RSAPrivateKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.keys[kid] = key
        return key

    def token(self, kid: str, **claims: Any) -> str:
        payload = {"sub": "carol", "exp": int(time.time()) + 60, **claims}
        return jwt.encode(payload, self.keys[kid], algorithm="RS256", headers={"kid": kid})

    def refuse(self) -> None:
        """Close the listening socket: from now on connections are refused."""
        if not self.refused:
            self.refused = True
            self.httpd.shutdown()
            self.httpd.server_close()

    def close(self) -> None:
        self.release.set()
        self.refuse()
        self.thread.join(5)
