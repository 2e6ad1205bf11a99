"""JWTs that last: a local JWKS server with rotation and outages, RFC 8725 rules, expiry."""

from __future__ import annotations

import concurrent.futures
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from helpers import handshake_bytes, make_app, parse_response, running, ws_url
from jwks_server import KeyServer
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from wsauth_sync import (
    ConfigurationError,
    HandshakePolicy,
    InvalidToken,
    JWTVerifier,
    QueryToken,
    Rejected,
    ServerHandshake,
    ServiceUnavailable,
)
from wsauth_sync.echo import WELCOME


def verifier(keys: KeyServer, **options: Any) -> JWTVerifier:
    options.setdefault("jwks_cooldown", 0.5)
    return JWTVerifier(jwks_url=keys.url, algorithms=["RS256"], **options)


def test_jwks_token_opens_a_connection(keys: KeyServer) -> None:
    with (
        running(make_app(verifier=verifier(keys))) as server,
        connect(f"{ws_url(server)}?token={keys.token('k1')}", open_timeout=5) as ws,
    ):
        assert ws.recv(timeout=5) == WELCOME
    assert keys.fetches == 1


def test_keys_are_cached(keys: KeyServer) -> None:
    check = verifier(keys)
    for _ in range(20):
        assert check(keys.token("k1")).subject == "carol"
    assert keys.fetches == 1


def test_rotation_is_picked_up_after_one_fetch(keys: KeyServer) -> None:
    check = verifier(keys, jwks_cooldown=0.0)
    assert check(keys.token("k1")).subject == "carol"
    keys.add_key("k2")
    assert check(keys.token("k2")).subject == "carol"  # unknown kid: one refresh
    assert keys.fetches == 2
    assert check(keys.token("k2")).subject == "carol"
    assert keys.fetches == 2


def test_removed_key_is_refused_once_the_cache_ages_out(keys: KeyServer) -> None:
    check = verifier(keys, jwks_lifespan=0.3, jwks_cooldown=0.2)
    old = keys.token("k1")
    assert check(old).subject == "carol"
    keys.add_key("k2")
    del keys.keys["k1"]
    time.sleep(0.4)  # let the 0.3 s cache lifetime pass (the behaviour under test)
    with pytest.raises(InvalidToken) as info:
        check(old)
    assert info.value.reason == "withdrawn_kid"


def test_random_kids_cause_at_most_one_fetch_per_cooldown(keys: KeyServer) -> None:
    check = verifier(keys, jwks_cooldown=30.0)
    assert check(keys.token("k1")).subject == "carol"
    forged_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def forged() -> str:
        payload = {"sub": "mallory", "exp": int(time.time()) + 60}
        return jwt.encode(payload, forged_key, algorithm="RS256", headers={"kid": uuid.uuid4().hex})

    tokens = [forged() for _ in range(200)]

    def attempt(token: str) -> str:
        try:
            check(token)
        except InvalidToken as exc:
            return exc.reason
        return "accepted"

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        reasons = list(pool.map(attempt, tokens, timeout=30))
    assert set(reasons) == {"unknown_kid"}
    assert keys.fetches <= 2  # the first fetch, plus at most one forced refresh


def test_unreachable_key_server_is_503_never_401(keys: KeyServer) -> None:
    keys.status = 500
    app = make_app(verifier=verifier(keys))
    with running(app) as server:
        with pytest.raises(InvalidStatus) as info:
            connect(f"{ws_url(server)}?token={keys.token('k1')}", open_timeout=5)
        response = info.value.response
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"


def test_hanging_key_server_is_cut_off_before_the_deadline(keys: KeyServer) -> None:
    keys.hang.set()
    check = verifier(keys, jwks_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as info:
        check(keys.token("k1"))
    # No key set yet: the kid cannot be checked, and the client is charged for it.
    assert info.value.reason == "unknown_kid_unavailable"
    assert info.value.failed_authentication
    assert time.monotonic() - started < 2.0


def test_last_good_keys_survive_an_outage(keys: KeyServer) -> None:
    check = verifier(keys, jwks_lifespan=0.2, jwks_cooldown=0.2)
    assert check(keys.token("k1")).subject == "carol"
    keys.status = 500
    time.sleep(0.3)  # the cached set expires; the refetch fails (the behaviour under test)
    assert check(keys.token("k1")).subject == "carol"
    assert keys.fetches >= 2


def test_jwks_configuration_is_checked(keys: KeyServer) -> None:
    with pytest.raises(ConfigurationError, match="https"):
        JWTVerifier(jwks_url="http://id.example/jwks", algorithms=["RS256"])
    with pytest.raises(ConfigurationError, match="exactly one"):
        JWTVerifier(key="k" * 32, jwks_url=keys.url, algorithms=["RS256"])
    with pytest.raises(ConfigurationError, match="public keys"):
        JWTVerifier(jwks_url=keys.url, algorithms=["HS256"])
    with pytest.raises(ConfigurationError, match="leeway"):
        JWTVerifier(key="k" * 32, algorithms=["HS256"], leeway=3600)


# -- RFC 8725 rules, each answered with the same 401 -----------------------------------------

SECRET_KEY = "s" * 32


def b64(data: bytes) -> str:
    return jwt.utils.base64url_encode(data).decode()


def raw_token(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)]
    )


def later() -> int:
    return int(time.time()) + 60


HOSTILE = {
    "alg none": raw_token({"alg": "none"}, {"sub": "x", "exp": later()}),
    "alg None": raw_token({"alg": "None"}, {"sub": "x", "exp": later()}),
    "alg NONE": raw_token({"alg": "NONE"}, {"sub": "x", "exp": later()}),
    "alg noNE": raw_token({"alg": "noNE"}, {"sub": "x", "exp": later()}),
    "two segments": "a.b",
    "four segments": "a.b.c.d",
    "garbage": "!!.!!.!!",
    "header is a list": b64(b"[]") + "." + b64(b"{}") + ".",
    "exp not a number": jwt.encode({"sub": "x", "exp": "soon"}, SECRET_KEY, algorithm="HS256"),
    "iat in the future": jwt.encode(
        {"sub": "x", "exp": later() + 3600, "iat": later() + 600}, SECRET_KEY, algorithm="HS256"
    ),
    "unknown crit": jwt.encode(
        {"sub": "x", "exp": later()},
        SECRET_KEY,
        algorithm="HS256",
        headers={"crit": ["x-unknown"], "x-unknown": 1},
    ),
    "expired": jwt.encode(
        {"sub": "x", "exp": int(time.time()) - 60}, SECRET_KEY, algorithm="HS256"
    ),
    "kid injection": jwt.encode(
        {"sub": "x", "exp": later()},
        "z" * 32,
        algorithm="HS256",
        headers={"kid": "../../etc/passwd' OR 1=1"},
    ),
}


def rejection(token: str) -> Rejected:
    policy = HandshakePolicy(
        verifier=JWTVerifier(key=SECRET_KEY, algorithms=["HS256"]), sources=(QueryToken(),)
    )
    result = ServerHandshake(policy).receive_data(handshake_bytes(f"/ws?token={token}"))
    assert isinstance(result, Rejected)
    return result


def test_every_jwt_rule_gives_the_same_401() -> None:
    baseline = rejection(HOSTILE["expired"]).response
    assert parse_response(baseline)[0] == 401
    reasons = {}
    for name, token in HOSTILE.items():
        result = rejection(token)
        assert result.response == baseline, name
        reasons[name] = result.error.reason
    assert reasons["expired"] == "expired"
    assert reasons["iat in the future"] in ("bad_iat", "not_yet_valid")
    assert reasons["alg noNE"] in ("bad_algorithm", "malformed")


def test_jku_and_jwk_headers_are_ignored_and_fetch_nothing(keys: KeyServer) -> None:
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attacker_jwk = jwt.algorithms.RSAAlgorithm.to_jwk(attacker.public_key(), as_dict=True)
    token = jwt.encode(
        {"sub": "mallory", "exp": later()},
        attacker,
        algorithm="RS256",
        headers={"kid": "k1", "jku": keys.url, "jwk": attacker_jwk, "x5u": keys.url},
    )
    trusted = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    check = JWTVerifier(key=trusted.public_key(), algorithms=["RS256"])
    with pytest.raises(InvalidToken) as info:
        check(token)
    assert info.value.reason == "bad_signature"
    assert keys.fetches == 0  # the URL in the token was never fetched


# -- expiry on an open connection ------------------------------------------------------------


def test_jwt_expiry_closes_the_connection_with_1008() -> None:
    check = JWTVerifier(key=SECRET_KEY, algorithms=["HS256"], leeway=0)
    token = jwt.encode({"sub": "dave", "exp": int(time.time()) + 2}, SECRET_KEY, algorithm="HS256")
    with (
        running(make_app(verifier=check)) as server,
        connect(f"{ws_url(server)}?token={token}", open_timeout=3) as ws,
    ):
        assert ws.recv(timeout=3) == WELCOME
        ws.send("before expiry")
        assert ws.recv(timeout=3) == "You said: before expiry"
        with pytest.raises(ConnectionClosed) as info:
            # The echo example asks for a fresh token first; unanswered, expiry closes.
            assert '"type": "reauth_required"' in ws.recv(timeout=5)
            ws.recv(timeout=5)
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "credential expired")
        assert token not in info.value.rcvd.reason


def test_cli_jwks_url(keys: KeyServer) -> None:
    import sys

    from helpers import ServerProcess

    server = ServerProcess(
        [sys.executable, "-m", "wsauth_sync", "echo", "--port", "0", "--jwks-url", keys.url]
    )
    try:
        url = server.expect(r"Listening on (ws://\S+)").group(1)
        with connect(f"{url}?token={keys.token('k1')}", open_timeout=5) as ws:
            assert ws.recv(timeout=5) == WELCOME
    finally:
        assert server.stop() == 0
    assert "subject=carol" in server.output
