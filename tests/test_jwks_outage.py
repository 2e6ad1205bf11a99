"""JWKS under attack and outage, over real sockets: withdrawn keys stay withdrawn, stale
keys have a bounded age, an outage cannot be amplified into fetches, cached keys never
wait for a fetch, and unknown ``kid`` values spend the client's failed-auth budget."""

from __future__ import annotations

import concurrent.futures
import logging
import socket
import threading
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from helpers import handshake_bytes, make_app, read_response, running, wait_for
from jwks_server import KeyServer

from wsauth_sync import HandshakeError, JWTVerifier, WebSocketServer
from wsauth_sync.jwt_verifier import JWKSCache

#: Everything the key server can do after a withdrawal. The first five are outages (the
#: last good set stays in use); "empty" and "other_family" are answers that withdraw it.
OUTAGES = ("status_500", "hang", "refused", "dropped", "garbage", "not_an_object")
WITHDRAWALS = ("empty", "other_family")

FORGER = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def verifier(keys: KeyServer, **options: Any) -> JWTVerifier:
    settings: dict[str, Any] = {
        "jwks_cooldown": 0.3,
        "jwks_lifespan": 0.3,
        "jwks_timeout": 0.5,
        **options,
    }
    return JWTVerifier(jwks_url=keys.url, algorithms=["RS256"], **settings)


def break_key_server(keys: KeyServer, failure: str) -> None:
    if failure == "status_500":
        keys.status = 500
    elif failure == "hang":
        keys.hang.set()
    elif failure == "refused":
        keys.refuse()
    elif failure == "dropped":
        keys.answer = "drop"
    else:
        keys.answer = failure


def forged(kid: str | None = None) -> str:
    """A well-formed token signed by a key no provider published, with a random kid."""
    payload = {"sub": "mallory", "exp": int(time.time()) + 60}
    return jwt.encode(payload, FORGER, algorithm="RS256", headers={"kid": kid or uuid.uuid4().hex})


def login(
    server: WebSocketServer, token: str, timeout: float = 10.0, source_ip: str | None = None
) -> tuple[int, dict[str, str]]:
    """One opening handshake over a fresh socket: the status code and response headers."""
    with socket.create_connection(
        server.address, timeout=timeout, source_address=(source_ip, 0) if source_ip else None
    ) as sock:
        sock.sendall(handshake_bytes(f"/ws?token={token}"))
        head = read_response(sock, timeout).partition(b"\r\n\r\n")[0].decode("latin-1")
    status_line, *lines = head.split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


def rejected_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "wsauth_sync" and r.getMessage().startswith("rejected")
    ]


# -- item 2: a withdrawn key is never accepted again -------------------------------------------


@pytest.mark.parametrize("failure", OUTAGES + WITHDRAWALS)
def test_withdrawn_key_is_never_accepted_again(
    keys: KeyServer, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wsauth_sync")
    with running(make_app(verifier=verifier(keys))) as server:
        old = keys.token("k1")
        assert login(server, old)[0] == 101
        keys.add_key("k2")
        del keys.keys["k1"]  # the provider withdraws k1 and publishes k2
        assert wait_for(lambda: login(server, old)[0] == 401, timeout=5)
        assert login(server, keys.token("k2"))[0] == 101

        break_key_server(keys, failure)
        before = keys.fetches
        time.sleep(0.4)  # past the 0.3 s lifespan and cooldown (the behaviour under test)
        # The next login finds the set due and fetches; only an outage keeps k2 usable.
        expected_k2 = 101 if failure in OUTAGES else 401
        assert login(server, keys.token("k2"))[0] == expected_k2
        if failure != "refused":
            assert wait_for(lambda: keys.fetches > before)
        for _ in range(3):
            status, headers = login(server, old)
            assert status == 401, (failure, status)
            assert 'error="invalid_token"' in headers["www-authenticate"]
            time.sleep(0.35)  # another cooldown: any further fetch fails the same way
    assert any("status=401 reason=withdrawn_kid" in line for line in rejected_lines(caplog))


def test_withdrawn_key_published_again_is_accepted_again(keys: KeyServer) -> None:
    check = verifier(keys)
    old = keys.token("k1")
    assert check(old).subject == "carol"
    k1 = keys.keys.pop("k1")
    keys.add_key("k2")
    assert wait_for(lambda: _refused(check, old), timeout=5)
    keys.keys["k1"] = k1  # the provider rolls the withdrawal back
    assert wait_for(lambda: not _refused(check, old), timeout=5)


def _refused(check: JWTVerifier, token: str) -> bool:
    try:
        check(token)
    except Exception:
        return True
    return False


# -- item 2: the age of stale keys is bounded ---------------------------------------------------


def test_stale_keys_have_a_bounded_age(keys: KeyServer) -> None:
    max_stale = 1.5
    check = verifier(keys, jwks_max_stale=max_stale)
    with running(make_app(verifier=check)) as server:
        token = keys.token("k1")
        fetched = time.monotonic()
        assert login(server, token)[0] == 101
        keys.status = 500
        time.sleep(0.4)  # past the lifespan: the refresh fails, the last good set serves
        assert login(server, token)[0] == 101
        assert keys.fetches == 2

        seen: list[int] = []

        def refused() -> bool:
            seen.append(login(server, token)[0])
            return seen[-1] == 503

        assert wait_for(refused, timeout=max_stale + 5)
        assert time.monotonic() - fetched >= max_stale  # never refused before the bound
        assert set(seen) <= {101, 503}, seen
        status, headers = login(server, token)
        assert (status, headers["retry-after"]) == (503, "5")
        # Not the client's fault: it keeps getting 503, never 429.
        assert {login(server, token)[0] for _ in range(25)} == {503}

        keys.status = 200  # the key server recovers: after a cooldown the key works again
        assert wait_for(lambda: login(server, token)[0] == 101, timeout=5)


def test_max_stale_is_validated(keys: KeyServer) -> None:
    from wsauth_sync import ConfigurationError

    with pytest.raises(ConfigurationError, match="jwks_max_stale"):
        verifier(keys, jwks_lifespan=10.0, jwks_max_stale=5.0)
    with pytest.raises(ConfigurationError, match="jwks_cooldown"):
        verifier(keys, jwks_cooldown=60.0, jwks_lifespan=10.0)


# -- item 7: no amplification, no waiting, and unknown kids spend the budget --------------------


@pytest.mark.parametrize("outage", ["none", "status_500", "hang"])
def test_random_kids_fetch_once_per_cooldown_and_get_429(keys: KeyServer, outage: str) -> None:
    cooldown = 1.0
    check = verifier(keys, jwks_cooldown=cooldown, jwks_lifespan=60.0)
    with running(make_app(verifier=check)) as server:
        assert login(server, keys.token("k1"))[0] == 101
        if outage != "none":
            break_key_server(keys, outage)
        time.sleep(cooldown + 0.1)  # the next unknown kid may fetch (the behaviour under test)
        before = keys.fetches
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            statuses = [
                status
                for status, _ in pool.map(
                    lambda token: login(server, token), [forged() for _ in range(200)], timeout=45
                )
            ]
        elapsed = time.monotonic() - started
        fetched = keys.fetches - before
        assert 1 <= fetched <= 1 + int(elapsed / cooldown), (fetched, elapsed)
        # 401 while the key server's last answer stands, 503 once a fetch has failed.
        assert set(statuses) <= {401, 503, 429}, set(statuses)
        assert (503 in statuses) == (outage != "none")
        # 20 failures at once, 1 per second earned back, 8 in flight when the budget ran out.
        assert statuses.count(429) >= 200 - 20 - 8 - int(elapsed) - 1
        status, headers = login(server, forged())
        assert status == 429 and int(headers["retry-after"]) >= 1
        # A client elsewhere is not affected by this one's budget.
        assert check(keys.token("k1")).subject == "carol"


def test_cached_key_login_does_not_wait_for_a_hanging_fetch(keys: KeyServer) -> None:
    fetch_timeout = 3.0
    check = verifier(keys, jwks_timeout=fetch_timeout)
    with running(make_app(verifier=check)) as server:
        token = keys.token("k1")
        assert login(server, token)[0] == 101
        keys.hang.set()
        keys.arrived.clear()
        time.sleep(0.4)  # past the lifespan and cooldown: the set is due for a refresh
        prober = threading.Thread(target=lambda: results.append(login(server, forged())[0]))
        results: list[int] = []
        prober.start()
        assert keys.arrived.wait(5)  # a fetch is now hanging at the key server

        def timed_login(_: int) -> tuple[int, float]:
            started = time.monotonic()
            status = login(server, token)[0]
            return status, time.monotonic() - started

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(timed_login, range(8), timeout=30))
        assert keys.fetches == 2  # the hanging fetch is the only one
        assert [status for status, _ in outcomes] == [101] * 8
        # Bounded well under the fetch timeout that the hanging fetch is waiting out.
        assert max(took for _, took in outcomes) < fetch_timeout / 2, outcomes
        prober.join(10)
        assert results and results[0] == 503  # the unknown kid could not be checked


def test_random_kids_from_many_addresses_are_each_charged(keys: KeyServer) -> None:
    cooldown = 1.0
    check = verifier(keys, jwks_cooldown=cooldown, jwks_lifespan=60.0)
    attackers = [f"127.0.0.{n}" for n in range(2, 6)]
    with running(make_app(verifier=check)) as server:
        assert login(server, keys.token("k1"))[0] == 101
        keys.status = 500
        time.sleep(cooldown + 0.1)  # the next unknown kid may fetch (the behaviour under test)
        before = keys.fetches
        started = time.monotonic()
        jobs = [address for address in attackers for _ in range(40)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(
                pool.map(
                    lambda ip: (ip, login(server, forged(), source_ip=ip)[0]), jobs, timeout=45
                )
            )
        elapsed = time.monotonic() - started
        assert keys.fetches - before <= 1 + int(elapsed / cooldown)
        for address in attackers:
            mine = [status for ip, status in statuses if ip == address]
            assert set(mine) <= {401, 503, 429} and mine.count(429) >= 5, (address, mine)
            assert login(server, forged(), source_ip=address)[0] == 429
        # The legitimate client, at its own address, still gets in on the last good set.
        assert login(server, keys.token("k1"))[0] == 101


# -- the cache's decisions, with a fake clock and a fake key server ----------------------------

RSA_JWK = jwt.algorithms.RSAAlgorithm.to_jwk(FORGER.public_key(), as_dict=True)


def jwk_set(*kids: str) -> dict[str, Any]:
    return {"keys": [{**RSA_JWK, "kid": kid, "alg": "RS256"} for kid in kids]}


class FakeKeyServer:
    def __init__(self, *kids: str) -> None:
        self.now = 0.0
        self.document: Any = jwk_set(*kids)
        self.error: Exception | None = None
        self.calls = 0

    def fetch(self) -> Any:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.document

    def cache(self, **timings: float) -> JWKSCache:
        settings = {"cooldown": 1.0, "lifespan": 10.0, "max_stale": 100.0, **timings}
        return JWKSCache(self.fetch, clock=lambda: self.now, **settings)


def reason(cache: JWKSCache, kid: str) -> str:
    try:
        cache.key(kid)
    except HandshakeError as exc:
        return f"{exc.status} {exc.reason}{' charged' if exc.failed_authentication else ''}"
    return "ok"


def test_cache_decisions_through_rotation_and_outage() -> None:
    provider = FakeKeyServer("k1")
    cache = provider.cache()
    assert reason(cache, "k1") == "ok"
    assert reason(cache, "x") == "401 unknown_kid charged"  # asked 0 s ago: no fetch
    assert provider.calls == 1
    provider.now = 1.0  # cooldown over
    provider.document = jwk_set("k2")
    assert reason(cache, "k1") == "ok"  # in the set, within its lifespan: nothing fetched
    assert provider.calls == 1
    assert reason(cache, "k2") == "ok"  # an unknown kid forces one fetch
    assert provider.calls == 2
    assert [reason(cache, "k1"), reason(cache, "x")] == [
        "401 withdrawn_kid charged",
        "401 unknown_kid charged",
    ]
    provider.error = ConnectionRefusedError()
    for step in range(1, 200):  # an outage of 199 s, with lookups of every kind each second
        provider.now = 1.0 + step
        assert reason(cache, "k1") == "401 withdrawn_kid charged"
        assert reason(cache, "x") == "503 unknown_kid_unavailable charged"
        assert reason(cache, "k2") == ("ok" if provider.now - 1.0 < 100 else "503 key_fetch_failed")
    assert provider.calls == 2 + 199  # one fetch per 1 s cooldown, never more
    provider.error = None
    provider.now += 1.0
    assert [reason(cache, "k2"), reason(cache, "k1")] == ["ok", "401 withdrawn_kid charged"]


def test_cache_treats_only_a_jwk_set_as_an_answer() -> None:
    for document, k1 in [
        ({"keys": []}, "401 withdrawn_kid charged"),
        (jwk_set("other"), "401 withdrawn_kid charged"),
        ({"keys": "k1"}, "ok"),
        ({"nothing": []}, "ok"),
        (["keys"], "ok"),
        ({"keys": [{"kty": "nope", "kid": "k1"}]}, "ok"),
    ]:
        provider = FakeKeyServer("k1")
        cache = provider.cache()
        assert reason(cache, "k1") == "ok"
        provider.document = document
        provider.now = 10.0  # lifespan over: the next lookup fetches
        assert reason(cache, "k1") == k1, document
        assert provider.calls == 2


def test_cache_forgets_old_withdrawals_but_never_accepts_them() -> None:
    provider = FakeKeyServer("r0")
    cache = provider.cache(cooldown=0.0, lifespan=1.0, max_stale=1.0)
    for n in range(1, 1100):
        provider.document = jwk_set(f"r{n}")
        provider.now = float(n)
        assert reason(cache, f"r{n}") == "ok"
    assert reason(cache, "r1000") == "401 withdrawn_kid charged"
    assert reason(cache, "r0") == "401 unknown_kid charged"  # forgotten, still refused


def test_cache_lookups_never_wait_for_a_fetch_in_progress() -> None:
    provider = FakeKeyServer("k1")
    cache = provider.cache()
    assert reason(cache, "k1") == "ok"
    inside, release = threading.Event(), threading.Event()

    def slow_fetch() -> Any:
        inside.set()
        release.wait(10)
        return jwk_set("k1")

    provider.now = 10.0  # lifespan over
    cache._fetch = slow_fetch
    fetcher = threading.Thread(target=cache.key, args=("k1",))
    fetcher.start()
    try:
        assert inside.wait(5)
        started = time.monotonic()
        assert [reason(cache, "k1") for _ in range(50)] == ["ok"] * 50
        # An unknown kid is answered at once from the last set too, not held for the fetch.
        assert reason(cache, "new") == "401 unknown_kid charged"
        assert time.monotonic() - started < 2.0  # the fetch is held for up to 10 s
    finally:
        release.set()
        fetcher.join(10)
