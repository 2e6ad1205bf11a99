"""Command line: ``wsauth-sync echo`` runs the example echo server; ``keys`` manages API keys.

With no authentication flag the echo server does not run open: it makes a random demo
token and prints a URL that carries it.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from .app import DEFAULT_HANDSHAKE_TIMEOUT, WebSocketApp
from .connection import DEFAULT_MAX_MESSAGE_SIZE
from .echo import demo_page, echo
from .errors import ConfigurationError
from .jwt_verifier import JWTVerifier
from .keystore import DATABASE_ERRORS, open_keystore
from .server import WebSocketServer
from .sources import BearerToken, CookieToken, QueryToken, SubprotocolToken, TokenSource
from .verifiers import StaticTokens, Verifier

_SOURCES: dict[str, type[TokenSource]] = {
    "query": QueryToken,
    "bearer": BearerToken,
    "subprotocol": SubprotocolToken,
    "cookie": CookieToken,
}


#: What a command reports in one line (exit status 2) instead of a traceback.
_FAILURES: tuple[type[Exception], ...] = (ConfigurationError, OSError, *DATABASE_ERRORS)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsauth-sync", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("echo", help="run the authenticated echo server")
    run.add_argument("--host", default="127.0.0.1", help="address to listen on")
    run.add_argument("--port", type=int, default=8080, help="TCP port (0: any free port)")
    run.add_argument("--path", default="/ws", help="WebSocket path")
    auth = run.add_argument_group("authentication (one kind)")
    auth.add_argument("--token", action="append", default=[], metavar="TOKEN",
                      help="accept this static token (repeatable)")
    auth.add_argument("--jwt-secret", metavar="SECRET", help="verify HS* JWTs with this secret")
    auth.add_argument("--jwt-public-key", metavar="PEMFILE", type=Path,
                      help="verify RS*/PS*/ES*/EdDSA JWTs with this public key")
    auth.add_argument("--jwks-url", metavar="URL",
                      help="verify JWTs with the keys of this JWK Set (https://)")
    auth.add_argument("--jwt-algorithm", metavar="ALG",
                      help="JWT algorithm (default HS256 with a secret; required with a key)")
    auth.add_argument("--jwt-audience", metavar="AUD", help="required JWT audience")
    auth.add_argument("--jwt-issuer", metavar="ISS", help="required JWT issuer")
    run.add_argument("--source", action="append", choices=sorted(_SOURCES),
                     help="where tokens may travel (repeatable; default: query, bearer, "
                          "subprotocol; cookie needs --allow-origin)")
    run.add_argument("--allow-origin", action="append", metavar="ORIGIN",
                     help="browser origin allowed to connect, e.g. https://app.example.com "
                          "(repeatable; requests from other or no origins get 403)")
    run.add_argument("--certfile", type=Path, help="serve wss:// with this certificate (PEM)")
    run.add_argument("--keyfile", type=Path, help="private key for --certfile (PEM)")
    run.add_argument("--no-rate-limit", action="store_true",
                     help="do not answer 429 to clients that keep failing authentication")
    run.add_argument("--max-message-size", type=int, default=DEFAULT_MAX_MESSAGE_SIZE,
                     metavar="BYTES")
    run.add_argument("--handshake-timeout", type=float, default=DEFAULT_HANDSHAKE_TIMEOUT,
                     metavar="SECONDS")
    run.add_argument("--max-connections", type=int, default=256)
    auth.add_argument("--keys-db", metavar="PATH|DSN",
                      help="verify API keys from this key store (SQLite file or postgresql://)")
    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a key (printed once)")
    create.add_argument("name", help="the owner (subject) of the key")
    create.add_argument("--scope", action="append", default=[], help="grant a scope (repeatable)")
    create.add_argument("--expires", metavar="WHEN",
                        help="lifetime like 30m, 12h, 7d, or an ISO date/time")
    actions.add_parser("list", help="list keys (never the keys themselves)")
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    for action in (create, *actions.choices.values()):
        if not any(a.dest == "db" for a in action._actions):
            action.add_argument("--db", required=True, metavar="PATH|DSN",
                                help="SQLite file or postgresql:// DSN")
    return parser


def _verifier(args: argparse.Namespace) -> tuple[Verifier, str | None]:
    """The verifier the flags ask for, and the demo token if none was asked for."""
    kinds = [bool(args.token), args.jwt_secret is not None, args.jwt_public_key is not None,
             args.jwks_url is not None, args.keys_db is not None]
    if sum(kinds) > 1:
        raise ConfigurationError(
            "choose one of --token, --jwt-secret, --jwt-public-key, --jwks-url, --keys-db")
    if args.keys_db is not None:
        return open_keystore(args.keys_db), None
    jwt_options = {"audience": args.jwt_audience, "issuer": args.jwt_issuer}
    if args.jwt_secret is not None:
        algorithm = args.jwt_algorithm or "HS256"
        return JWTVerifier(key=args.jwt_secret, algorithms=[algorithm], **jwt_options), None
    if args.jwt_public_key is not None:
        if not args.jwt_algorithm:
            raise ConfigurationError("--jwt-public-key needs --jwt-algorithm (RS256, ES256...)")
        key = args.jwt_public_key.read_bytes()
        return JWTVerifier(key=key, algorithms=[args.jwt_algorithm], **jwt_options), None
    if args.jwks_url is not None:
        return JWTVerifier(jwks_url=args.jwks_url, algorithms=[args.jwt_algorithm or "RS256"],
                           **jwt_options), None
    if args.token:
        return StaticTokens(args.token), None
    demo = secrets.token_urlsafe(24)
    return StaticTokens({demo: "demo"}), demo


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.certfile is None:
        if args.keyfile is not None:
            raise ConfigurationError("--keyfile needs --certfile")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.certfile, args.keyfile)
    return context


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.command == "keys":
        return _keys(args)
    return _echo(args)


def _keys(args: argparse.Namespace) -> int:
    try:
        store = open_keystore(args.db)
        if args.action == "create":
            key, record = store.create(args.name, scopes=args.scope,
                                       expires_at=_when(args.expires))
            print(f"Created key {record.key_id} for {record.subject}. Store it now; "
                  "it is not shown again:", file=sys.stderr)
            print(key)
        elif args.action == "list":
            print("ID            OWNER  SCOPES  CREATED  EXPIRES  LAST USED  STATUS")
            for r in store.records():
                status = "revoked" if r.revoked_at else "active"
                print(f"{r.key_id}  {r.subject}  {','.join(r.scopes) or '-'}  "
                      f"{_stamp(r.created_at)}  {_stamp(r.expires_at)}  "
                      f"{_stamp(r.last_used_at)}  {status}")
        elif not store.revoke(args.key_id):
            print(f"wsauth-sync: no active key {args.key_id}", file=sys.stderr)
            return 1
        else:
            print(f"Revoked {args.key_id}; its open connections close within seconds.")
    except _FAILURES as exc:
        print(f"wsauth-sync: {exc}", file=sys.stderr)
        return 2
    return 0


def _when(text: str | None) -> float | None:
    """``30m``/``12h``/``7d`` from now, or an ISO date/time, as POSIX time."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[:-1].isdigit() and text[-1:] in units:
        return time.time() + int(text[:-1]) * units[text[-1]]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(f"--expires: not a duration or ISO time: {text!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _stamp(moment: float | None) -> str:
    if moment is None:
        return "-"
    return datetime.fromtimestamp(moment, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")


def _echo(args: argparse.Namespace) -> int:
    try:
        verifier, demo_token = _verifier(args)
        sources = [_SOURCES[name]() for name in (args.source or ["query", "bearer",
                                                                  "subprotocol"])]
        app = WebSocketApp({args.path: echo}, verifier=verifier, sources=sources,
                           max_message_size=args.max_message_size,
                           handshake_timeout=args.handshake_timeout,
                           allowed_origins=args.allow_origin,
                           pages={"/": demo_page(args.path)},
                           limiter=None if args.no_rate_limit else "default")
        server = WebSocketServer(app, host=args.host, port=args.port,
                                 max_connections=args.max_connections,
                                 ssl_context=_tls_context(args))
    except _FAILURES as exc:
        print(f"wsauth-sync: {exc}", file=sys.stderr)
        return 2
    host, port = server.address
    url = f"{'wss' if server.ssl_context else 'ws'}://{host}:{port}{args.path}"
    print(f"Listening on {url}", flush=True)
    page = f"{'https' if server.ssl_context else 'http'}://{host}:{port}/"
    if demo_token is not None:
        print("No authentication flag given: accepting one random demo token.")
        print(f"Connect with: {url}?token={demo_token}", flush=True)
        print(f"Browser demo: {page}#token={demo_token}", flush=True)
    else:
        print(f"Browser demo: {page}", flush=True)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0
