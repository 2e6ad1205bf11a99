"""Verifiers: static tokens, JWT (symmetric and asymmetric), user callables."""

from __future__ import annotations

import hmac
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from helpers import handshake_bytes, parse_response

from wsauth_sync import (
    CallableVerifier,
    ConfigurationError,
    HandshakePolicy,
    Identity,
    InvalidToken,
    JWTVerifier,
    QueryToken,
    Rejected,
    ServerHandshake,
    StaticTokens,
)

HS_KEY = "k" * 32


# -- static tokens ------------------------------------------------------------------------


def test_static_tokens_map_to_subjects() -> None:
    verifier = StaticTokens({"alpha-token": "alice", "beta-token": "bob"})
    assert verifier("beta-token") == Identity(subject="bob")
    with pytest.raises(InvalidToken) as info:
        verifier("gamma-token")
    assert info.value.reason == "unknown_token"


def test_static_tokens_from_a_list_get_numbered_subjects() -> None:
    assert StaticTokens(["one", "two"])("two").subject == "token-2"


def test_static_tokens_compare_every_candidate_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    verifier = StaticTokens(["first", "second", "third"])
    verifier("first")  # a match on the first entry still checks the other two
    assert len(calls) == 3
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)


@pytest.mark.parametrize("tokens", [[], {}, [""], {"": "nobody"}])
def test_empty_configuration_is_refused(tokens: Any) -> None:
    with pytest.raises(ConfigurationError):
        StaticTokens(tokens)


def test_empty_and_non_ascii_tokens_are_invalid_not_errors() -> None:
    verifier = StaticTokens(["secret"])
    for token in ("", "sécret", "\udcff"):
        with pytest.raises(InvalidToken):
            verifier(token)


def test_repr_hides_tokens() -> None:
    assert "secret" not in repr(StaticTokens(["secret"]))


# -- callables ----------------------------------------------------------------------------


def test_callable_verifier_accepts_subject_identity_or_none() -> None:
    table = {"a": "alice", "b": Identity(subject="bob", claims={"role": "admin"})}
    verifier = CallableVerifier(table.get)  # type: ignore[arg-type]
    assert verifier("a") == Identity(subject="alice")
    assert verifier("b").claims == {"role": "admin"}
    with pytest.raises(InvalidToken):
        verifier("c")


def test_callable_raising_becomes_503_in_the_core() -> None:
    def lookup(token: str) -> str:
        raise ConnectionError("db unreachable")

    handshake = ServerHandshake(
        HandshakePolicy(verifier=CallableVerifier(lookup), sources=(QueryToken(),))
    )
    result = handshake.receive_data(handshake_bytes("/ws?token=abc"))
    assert isinstance(result, Rejected)
    assert parse_response(result.response)[0] == 503
    assert result.error.detail == "ConnectionError"


# -- JWT ----------------------------------------------------------------------------------


def hs_token(**claims: Any) -> str:
    payload = {"sub": "alice", "exp": int(time.time()) + 60, **claims}
    return jwt.encode(payload, HS_KEY, algorithm="HS256")


def test_jwt_hs256_gives_subject_claims_and_expiry() -> None:
    exp = int(time.time()) + 60
    identity = JWTVerifier(key=HS_KEY, algorithms=["HS256"])(hs_token(exp=exp, role="x"))
    assert identity.subject == "alice"
    assert identity.claims["role"] == "x"
    assert identity.expires_at == exp + 10  # accepted until exp + the default leeway


@pytest.mark.parametrize(
    ("token_args", "reason"),
    [
        ({"exp": 1}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not_yet_valid"),
        ({"aud": "other"}, "bad_audience"),
    ],
)
def test_jwt_time_and_audience_rules(token_args: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidToken) as info:
        JWTVerifier(key=HS_KEY, algorithms=["HS256"])(hs_token(**token_args))
    assert info.value.reason == reason


def test_jwt_missing_exp_is_refused_by_default() -> None:
    token = jwt.encode({"sub": "alice"}, HS_KEY, algorithm="HS256")
    with pytest.raises(InvalidToken) as info:
        JWTVerifier(key=HS_KEY, algorithms=["HS256"])(token)
    assert info.value.reason == "missing_claim"
    assert JWTVerifier(key=HS_KEY, algorithms=["HS256"], require=())(token).subject == "alice"


def test_jwt_audience_and_issuer_are_exact() -> None:
    verifier = JWTVerifier(
        key=HS_KEY, algorithms=["HS256"], audience="chat", issuer="https://id.example"
    )
    assert verifier(hs_token(aud="chat", iss="https://id.example")).subject == "alice"
    for claims, reason in (
        ({"aud": "chat", "iss": "https://id.example.evil"}, "bad_issuer"),
        ({"aud": "chatroom", "iss": "https://id.example"}, "bad_audience"),
        ({"iss": "https://id.example"}, "missing_claim"),
    ):
        with pytest.raises(InvalidToken) as info:
            verifier(hs_token(**claims))
        assert info.value.reason == reason


def test_jwt_leeway_admits_a_just_expired_token() -> None:
    token = hs_token(exp=int(time.time()) - 5)
    assert JWTVerifier(key=HS_KEY, algorithms=["HS256"], leeway=30)(token).subject == "alice"


def test_jwt_forged_signature_and_garbage() -> None:
    verifier = JWTVerifier(key=HS_KEY, algorithms=["HS256"])
    forged = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, "x" * 32, algorithm="HS256")
    with pytest.raises(InvalidToken) as info:
        verifier(forged)
    assert info.value.reason == "bad_signature"
    with pytest.raises(InvalidToken) as info:
        verifier("not.a.jwt")
    assert info.value.reason == "malformed"


def test_jwt_alg_none_is_refused() -> None:
    unsigned = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, "", algorithm="none")
    with pytest.raises(InvalidToken):
        JWTVerifier(key=HS_KEY, algorithms=["HS256"])(unsigned)


def test_jwt_typ_check() -> None:
    verifier = JWTVerifier(key=HS_KEY, algorithms=["HS256"], typ="at+jwt")
    good = jwt.encode(
        {"sub": "a", "exp": int(time.time()) + 60},
        HS_KEY,
        algorithm="HS256",
        headers={"typ": "at+jwt"},
    )
    assert verifier(good).subject == "a"
    with pytest.raises(InvalidToken) as info:
        verifier(hs_token())
    assert info.value.reason == "bad_typ"


def _pem_pair(private: Any) -> tuple[Any, bytes]:
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@pytest.mark.parametrize(
    ("algorithm", "private"),
    [
        ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", ec.generate_private_key(ec.SECP256R1())),
        ("EdDSA", ed25519.Ed25519PrivateKey.generate()),
    ],
)
def test_jwt_asymmetric_public_keys(algorithm: str, private: Any) -> None:
    private, public = _pem_pair(private)
    verifier = JWTVerifier(key=public, algorithms=[algorithm])
    token = jwt.encode({"sub": "svc", "exp": int(time.time()) + 60}, private, algorithm=algorithm)
    assert verifier(token).subject == "svc"


def test_hs256_token_signed_with_the_public_key_is_refused() -> None:
    # RFC 8725 §3.1 key confusion: an attacker signs HS256 with the (public) RSA key.
    _, public = _pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    verifier = JWTVerifier(key=public, algorithms=["RS256"])
    header = jwt.utils.base64url_encode(b'{"alg":"HS256","typ":"JWT"}')
    body = jwt.utils.base64url_encode(f'{{"sub":"mallory","exp":{int(time.time()) + 60}}}'.encode())
    signing_input = header + b"." + body
    signature = hmac.new(public, signing_input, "sha256").digest()
    token = (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()
    with pytest.raises(InvalidToken) as info:
        verifier(token)
    assert info.value.reason == "bad_algorithm"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": HS_KEY, "algorithms": []}, "algorithms"),
        ({"key": HS_KEY, "algorithms": "HS256"}, "algorithms"),
        ({"key": HS_KEY, "algorithms": ["none"]}, "none"),
        ({"key": HS_KEY, "algorithms": ["HS256", "RS256"]}, "family"),
        ({"key": "short", "algorithms": ["HS256"]}, "at least 32 bytes"),
        ({"key": "k" * 40, "algorithms": ["HS384"]}, "at least 48 bytes"),
        ({"key": HS_KEY, "algorithms": ["HS256"], "leeway": -1}, "leeway"),
        ({"key": "not a pem", "algorithms": ["RS256"]}, "key does not suit"),
    ],
)
def test_jwt_unsafe_configuration_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        JWTVerifier(**kwargs)


def test_expired_and_forged_tokens_get_identical_responses() -> None:
    policy = HandshakePolicy(
        verifier=JWTVerifier(key=HS_KEY, algorithms=["HS256"]), sources=(QueryToken(),)
    )
    expired = hs_token(exp=1)
    forged = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, "f" * 32, algorithm="HS256")
    results = []
    for token in (expired, forged):
        result = ServerHandshake(policy).receive_data(handshake_bytes(f"/ws?token={token}"))
        assert isinstance(result, Rejected)
        results.append(result)
    assert results[0].response == results[1].response
    assert parse_response(results[0].response)[0] == 401
    assert (results[0].error.reason, results[1].error.reason) == ("expired", "bad_signature")


# -- what the app learns from a verifier's attributes ---------------------------------------


class Delegating:
    """A user's wrapper (metrics, logging) that forwards every attribute it lacks."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def __call__(self, token: str, /) -> Identity:
        return self.inner(token)  # type: ignore[operator, no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_delegating_wrapper_keeps_what_its_verifier_declares(tmp_path: Path) -> None:
    from wsauth_sync.core.verifiers import may_block, revocation_source
    from wsauth_sync.keystore import SQLiteKeyStore

    store = SQLiteKeyStore(str(tmp_path / "keys.db"))
    wrapped_store, wrapped_static = Delegating(store), Delegating(StaticTokens({"t" * 16: "a"}))
    # Same answers on every Python (3.12 changed isinstance() on runtime-checkable
    # Protocols to ignore __getattr__): revocations are watched, a static table is inline.
    assert revocation_source(wrapped_store) is wrapped_store
    assert revocation_source(wrapped_static) is None
    assert may_block(wrapped_store) and not may_block(wrapped_static)
