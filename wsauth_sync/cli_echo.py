"""``wsauth-sync echo``: the echo server, its verifier from flags, files or the environment.

On start it prints, for each token source it enabled, how to connect (a URL for the
query, the header for bearer, the list for subprotocols), and the browser demo's URL
only when the page can use one of them.
"""

from __future__ import annotations

import argparse
import os
import secrets
import ssl
from pathlib import Path
from typing import NamedTuple, NoReturn

from .cli_keys import FAILURES, fail, is_dsn, is_missing_store, read_secret_file, store_location
from .config import WebSocketApp
from .core.errors import ConfigurationError
from .core.origin import normalize_origin
from .core.sources import BearerToken, CookieToken, QueryToken, SubprotocolToken, TokenSource
from .core.verifiers import StaticTokens, Verifier
from .echo import demo_page, echo, empty_icon
from .jwt_verifier import JWTVerifier
from .keystore import open_keystore
from .server import WebSocketServer

SOURCES: dict[str, type[TokenSource]] = {
    "query": QueryToken,
    "bearer": BearerToken,
    "subprotocol": SubprotocolToken,
    "cookie": CookieToken,
}
DEFAULT_SOURCES = ("query", "bearer", "subprotocol")
#: Sources the demo page can use (a browser cannot set an Authorization header).
PAGE_SOURCES = ("subprotocol", "query", "cookie")

#: Secrets read from the environment when no authentication flag is given: unlike a
#: command line, a process's environment is not readable by other local users.
ENV_TOKENS = "WSAUTH_TOKENS"
ENV_JWT_SECRET = "WSAUTH_JWT_SECRET"  # noqa: S105 (a variable's name)


class _Choice(NamedTuple):
    """One way of authenticating the command was given: kind, how (for messages), value."""

    kind: str
    how: str
    value: object


def _from_flags(args: argparse.Namespace) -> list[_Choice]:
    chosen = []
    if args.token or args.token_file:
        tokens = list(args.token)
        for path in args.token_file:
            tokens += [
                line.strip()
                for line in read_secret_file("--token-file", path).splitlines()
                if line.strip()
            ]
        how = " and ".join(
            flag
            for flag, given in (("--token", args.token), ("--token-file", args.token_file))
            if given
        )
        chosen.append(_Choice("token", how, tokens))
    if args.jwt_secret is not None and args.jwt_secret_file is not None:
        raise ConfigurationError("give --jwt-secret or --jwt-secret-file, not both")
    if args.jwt_secret_file is not None:
        secret = read_secret_file("--jwt-secret-file", args.jwt_secret_file)
        chosen.append(_Choice("jwt-secret", f"--jwt-secret-file {args.jwt_secret_file}", secret))
    elif args.jwt_secret is not None:
        chosen.append(_Choice("jwt-secret", "--jwt-secret", args.jwt_secret))
    if args.jwt_public_key is not None:
        chosen.append(
            _Choice(
                "jwt-public-key", f"--jwt-public-key {args.jwt_public_key}", args.jwt_public_key
            )
        )
    if args.jwks_url is not None:
        chosen.append(_Choice("jwks-url", f"--jwks-url {args.jwks_url}", args.jwks_url))
    store = store_location("--keys-db", args.keys_db, args.keys_db_file, use_env=False)
    if store is not None:
        how, location = store
        named = how == "--keys-db" and not is_dsn(location)  # a DSN may hold a password
        chosen.append(_Choice("keys-db", f"{how} {location}" if named else how, location))
    return chosen


def _from_environment() -> list[_Choice]:
    chosen = []
    tokens = [t.strip() for t in os.environ.get(ENV_TOKENS, "").split(",") if t.strip()]
    if tokens:
        chosen.append(_Choice("token", ENV_TOKENS, tokens))
    if os.environ.get(ENV_JWT_SECRET):
        chosen.append(_Choice("jwt-secret", ENV_JWT_SECRET, os.environ[ENV_JWT_SECRET]))
    store = store_location("--keys-db", None, None)
    if store is not None:
        chosen.append(_Choice("keys-db", *store))
    return chosen


def verifier_from(args: argparse.Namespace) -> tuple[Verifier, str | None]:
    """The verifier the flags (or, lacking any, the environment) ask for, and the demo
    token when neither asks for one."""
    chosen = _from_flags(args) or _from_environment()
    if len(chosen) > 1:
        raise ConfigurationError(
            f"choose one kind of authentication, not {' and '.join(c.how for c in chosen)}"
        )
    if not chosen:
        demo = secrets.token_urlsafe(24)
        return StaticTokens({demo: "demo"}), demo
    choice = chosen[0]
    try:
        return _build(choice, args), None
    except OSError as exc:
        raise ConfigurationError(f"{choice.how}: cannot read it ({exc.strerror or exc})") from None
    except FAILURES as exc:
        raise ConfigurationError(f"{choice.how}: {exc}") from None


def _build(choice: _Choice, args: argparse.Namespace) -> Verifier:
    jwt_options = {"audience": args.jwt_audience, "issuer": args.jwt_issuer}
    if choice.kind == "token":
        return StaticTokens(choice.value)  # type: ignore[arg-type]
    if choice.kind == "jwt-secret":
        return JWTVerifier(
            key=choice.value, algorithms=[args.jwt_algorithm or "HS256"], **jwt_options
        )
    if choice.kind == "jwt-public-key":
        if not args.jwt_algorithm:
            raise ConfigurationError("needs --jwt-algorithm (RS256, ES256...)")
        key = Path(str(choice.value)).read_bytes()
        return JWTVerifier(key=key, algorithms=[args.jwt_algorithm], **jwt_options)
    if choice.kind == "jwks-url":
        return JWTVerifier(
            jwks_url=str(choice.value), algorithms=[args.jwt_algorithm or "RS256"], **jwt_options
        )
    location = str(choice.value)
    if is_missing_store(location):
        raise ConfigurationError(
            "no key store there (make one with 'wsauth-sync keys create NAME')"
        )
    return open_keystore(location)


def tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server's TLS context from --certfile/--keyfile, or None for plain ws://."""
    if args.certfile is None:
        if args.keyfile is not None:
            raise ConfigurationError("--keyfile needs --certfile")
        return None
    for flag, path, marker in (
        ("--certfile", args.certfile, "CERTIFICATE-----"),
        ("--keyfile", args.keyfile or args.certfile, "PRIVATE KEY-----"),
    ):
        text = read_secret_file(flag, path)
        if marker not in text:
            what = "certificate" if marker.startswith("CERT") else "private key"
            raise ConfigurationError(f"{flag} {path}: no PEM {what} in the file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.certfile, args.keyfile, password=_no_passphrase)
    except ssl.SSLError as exc:
        raise ConfigurationError(
            f"--certfile {args.certfile} with --keyfile "
            f"{args.keyfile or args.certfile}: {exc.reason or exc}"
        ) from None
    return context


def _no_passphrase() -> NoReturn:
    # Without this callback OpenSSL would prompt on the terminal and wait for ever.
    raise ConfigurationError("--keyfile: the private key is encrypted; give an unencrypted one")


def connect_lines(url: str, sources: list[str], token: str, origins: list[str]) -> list[str]:
    """One ready-to-use ``Connect with:`` line per enabled source."""
    lines = []
    if "query" in sources:
        lines.append(f"Connect with: {url}?token={token}")
    if "bearer" in sources:
        lines.append(f'Connect with: {url} + header "Authorization: Bearer {token}"')
    if "subprotocol" in sources:
        lines.append(f'Connect with: {url} + subprotocols "bearer, {token}"')
    if "cookie" in sources:
        lines.append(f'Connect with: {url} + cookie "token={token}" + Origin "{origins[0]}"')
    return lines


def page_sources(
    sources: list[str], page_origin: str | None, origins: list[str] | None
) -> list[str]:
    """The enabled sources the demo page, served from ``page_origin``, can use."""
    allowed = {normalize_origin(origin) for origin in origins or ()}
    listed = page_origin is not None and normalize_origin(page_origin) in allowed
    if origins and not listed:
        return []  # the page's own handshakes would get 403
    return [name for name in PAGE_SOURCES if name in sources and (name != "cookie" or listed)]


def _listen(args: argparse.Namespace, app: WebSocketApp) -> WebSocketServer:
    try:
        return WebSocketServer(
            app,
            host=args.host,
            port=args.port,
            max_connections=args.max_connections,
            max_pending=args.max_pending,
            max_pending_per_ip=args.max_pending_per_ip,
            ssl_context=tls_context(args),
        )
    except OSError as exc:
        raise ConfigurationError(
            f"--host {args.host} --port {args.port}: cannot listen ({exc.strerror or exc})"
        ) from None


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run_echo(args: argparse.Namespace) -> int:
    """The ``echo`` command; returns the exit status."""
    sources = args.source or list(DEFAULT_SOURCES)
    if "cookie" in sources and not args.allow_origin:
        return fail(
            "--source cookie needs --allow-origin ORIGIN (browsers send cookies cross-site)"
        )
    scheme = "https" if args.certfile else "http"
    # With --port 0 the page's origin is unknown until bound, so no allowlist can hold it.
    page_origin = f"{scheme}://{_authority(args.host, args.port)}" if args.port else None
    usable = page_sources(sources, page_origin, args.allow_origin)
    pages = {"/": demo_page(args.path, sources=usable), "/favicon.ico": empty_icon()}
    try:
        verifier, demo_token = verifier_from(args)
        app = WebSocketApp(
            {args.path: echo},
            verifier=verifier,
            sources=[SOURCES[name]() for name in sources],
            max_message_size=args.max_message_size,
            handshake_timeout=args.handshake_timeout,
            allowed_origins=args.allow_origin,
            limiter=None if args.no_rate_limit else "default",
            trusted_proxies=args.trusted_proxy,
            send_timeout=args.send_timeout,
            max_connections_per_identity=args.max_connections_per_identity or None,
            max_connections_per_ip=args.max_connections_per_ip or None,
            pages=pages if usable else None,
            readable_refusals=[args.path] if args.readable_refusals else (),
        )
        server = _listen(args, app)
    except FAILURES as exc:
        return fail(str(exc))
    page = f"{scheme}://{_authority(args.host, server.address[1])}/"
    _announce(args, sources, demo_token, page, usable)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


def _announce(
    args: argparse.Namespace,
    sources: list[str],
    demo_token: str | None,
    page: str,
    usable: list[str],
) -> None:
    url = "ws" + page[len("http") :].rstrip("/") + args.path
    print(f"Listening on {url}")
    if demo_token is not None:
        print("No authentication flag given: accepting one random demo token.")
    for line in connect_lines(url, sources, demo_token or "TOKEN", args.allow_origin or []):
        print(line)
    if usable:
        print(f"Browser demo: {page}" + (f"#token={demo_token}" if demo_token else ""))
    print("Press Ctrl-C to stop.", flush=True)
