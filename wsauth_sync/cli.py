"""Command line: ``wsauth-sync echo`` runs the example echo server; ``keys`` manages API keys.

With no authentication flag the echo server does not run open: it makes a random demo
token and prints how to connect with it. Bad input is one line on stderr naming the
flag, the value and what is wrong, with exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn

from . import __version__
from .caps import DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, DEFAULT_MAX_CONNECTIONS_PER_IDENTITY
from .cli_echo import SOURCES, run_echo
from .cli_keys import ENV_KEYS_DB, run_keys
from .config import DEFAULT_HANDSHAKE_TIMEOUT
from .core.errors import ConfigurationError
from .core.origin import normalize_origin, trusted_proxy_set
from .limits import DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_SEND_TIMEOUT
from .pending import DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_PER_IP

DESCRIPTION = "Authenticated WebSocket echo server and API-key tool (wsauth_sync)."
SECRETS_NOTE = (
    "Secrets given on the command line are visible to every local user in the "
    "process list: prefer the -file flags or the environment variables "
    "WSAUTH_TOKENS (comma-separated), WSAUTH_JWT_SECRET and WSAUTH_KEYS_DB, "
    "read when no authentication flag is given."
)


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block), with exit status 2."""

    def error(self, message: str) -> NoReturn:
        message = message.removeprefix("argument ")
        self.exit(2, f"{self.prog}: {message}; see '{self.prog} --help'\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Appends each flag's default to its help, unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


def _number(
    kind: type[int] | type[float], what: str, low: float, high: float = math.inf
) -> Callable[[str], float]:
    """An argparse type: a finite ``kind`` within [low, high], or a one-line error."""

    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return convert


def _proxy(text: str) -> str:
    try:
        trusted_proxy_set([text])
    except ConfigurationError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address or unix") from None
    return text


def _path(text: str) -> str:
    # The path is also a cookie path and sits in the demo page's script: keep it plain.
    if not text.startswith("/") or any(c in text for c in " \t;?#\"'<>\\%"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a plain URL path starting with / (no spaces, ;?#%\"'<>\\)"
        )
    return text


def _origin(text: str) -> str:
    if normalize_origin(text) is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an origin (scheme://host[:port])")
    return text


def _add_echo(commands: argparse._SubParsersAction[_Parser]) -> None:
    run = commands.add_parser(
        "echo",
        help="run the authenticated echo server",
        description="Run the authenticated echo server.",
        formatter_class=_HelpFormatter,
    )
    run.set_defaults(parser=run)
    run.add_argument("--host", default="127.0.0.1", help="address to listen on")
    run.add_argument(
        "--port",
        type=_number(int, "a TCP port (0 to 65535)", 0, 65535),
        default=8080,
        help="TCP port (0: any free port)",
    )
    run.add_argument("--path", type=_path, default="/ws", help="WebSocket path")
    auth = run.add_argument_group(
        "authentication (one kind)",
        SECRETS_NOTE + " With none of them, one random demo token is accepted (and printed).",
    )
    auth.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="TOKEN",
        help="accept this static token (repeatable; visible in the process list)",
    )
    auth.add_argument(
        "--token-file",
        action="append",
        default=[],
        metavar="PATH",
        type=Path,
        help="accept the tokens in this file, one a line (repeatable)",
    )
    auth.add_argument(
        "--jwt-secret",
        metavar="SECRET",
        help="verify HS* JWTs with this secret (visible in the process list)",
    )
    auth.add_argument(
        "--jwt-secret-file",
        metavar="PATH",
        type=Path,
        help="verify HS* JWTs with the secret in this file",
    )
    auth.add_argument(
        "--jwt-public-key",
        metavar="PEMFILE",
        type=Path,
        help="verify RS*/PS*/ES*/EdDSA JWTs with this public key",
    )
    auth.add_argument(
        "--jwks-url",
        metavar="URL",
        help="verify JWTs with the keys of this JWK Set (https://, or http:// on loopback)",
    )
    auth.add_argument(
        "--jwt-algorithm",
        metavar="ALG",
        help="JWT algorithm (default: HS256 with a secret, RS256 with --jwks-url; "
        "required with --jwt-public-key)",
    )
    auth.add_argument(
        "--jwt-audience", metavar="AUD", help="required JWT audience (default: aud not checked)"
    )
    auth.add_argument(
        "--jwt-issuer", metavar="ISS", help="required JWT issuer (default: iss not checked)"
    )
    auth.add_argument(
        "--keys-db",
        metavar="PATH|DSN",
        help="verify API keys from this key store (SQLite file or postgresql:// "
        "DSN; a DSN password is visible in the process list)",
    )
    auth.add_argument(
        "--keys-db-file",
        metavar="PATH",
        type=Path,
        help="read the --keys-db location (a DSN, say) from this file",
    )
    run.add_argument(
        "--source",
        action="append",
        choices=sorted(SOURCES),
        help="where tokens may travel (repeatable; default: query, bearer, "
        "subprotocol; cookie needs --allow-origin)",
    )
    run.add_argument(
        "--allow-origin",
        action="append",
        metavar="ORIGIN",
        type=_origin,
        help="browser origin allowed to connect, e.g. https://app.example.com "
        "(repeatable; requests from other or no origins get 403; default: "
        "any origin)",
    )
    run.add_argument(
        "--certfile",
        type=Path,
        help="serve wss:// with this certificate chain (PEM; may hold the key; "
        "default: plain ws://)",
    )
    run.add_argument(
        "--keyfile",
        type=Path,
        help="private key for --certfile (PEM; default: the key in --certfile)",
    )
    run.add_argument(
        "--no-rate-limit",
        action="store_true",
        help="do not answer 429 to clients that keep failing authentication "
        "(default: 20 failures per address, then 1 a second)",
    )
    run.add_argument(
        "--readable-refusals",
        action="store_true",
        help="answer a browser's refused token with 101 then a Close 4401/4403/"
        "4429 and a fixed reason the page can show, instead of an HTTP "
        "status it cannot read (clients without Origin keep the status)",
    )
    run.add_argument(
        "--max-message-size",
        default=DEFAULT_MAX_MESSAGE_SIZE,
        metavar="BYTES",
        type=_number(int, "a positive number of bytes", 1),
        help="largest message accepted; bigger ones close with 1009",
    )
    run.add_argument(
        "--handshake-timeout",
        default=DEFAULT_HANDSHAKE_TIMEOUT,
        metavar="SECONDS",
        type=_number(float, "a positive number of seconds", 1e-3),
        help="absolute deadline for a client's handshake; later ones get 408",
    )
    run.add_argument(
        "--max-connections",
        default=256,
        metavar="N",
        type=_number(int, "a positive number of connections", 1),
        help="connections served at once; beyond it handshakes get 503",
    )
    run.add_argument(
        "--max-connections-per-identity",
        metavar="N",
        default=DEFAULT_MAX_CONNECTIONS_PER_IDENTITY,
        type=_number(int, "a number of connections (0: no cap)", 0),
        help="open connections one token subject may hold; beyond it 429 (0: no cap)",
    )
    run.add_argument(
        "--max-connections-per-ip",
        metavar="N",
        default=DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
        type=_number(int, "a number of connections (0: no cap)", 0),
        help="open connections one client address may hold; beyond it 429 (0: no cap)",
    )
    run.add_argument(
        "--max-pending",
        default=DEFAULT_MAX_PENDING,
        metavar="N",
        type=_number(int, "a positive number of handshakes", 1),
        help="handshakes whose request is still arriving; past it the oldest is dropped",
    )
    run.add_argument(
        "--max-pending-per-ip",
        default=DEFAULT_MAX_PENDING_PER_IP,
        metavar="N",
        type=_number(int, "a positive number of handshakes", 1),
        help="handshakes in progress from one address; past it its oldest is "
        "dropped (trusted proxies exempt)",
    )
    run.add_argument(
        "--trusted-proxy",
        action="append",
        metavar="ADDRESS",
        default=[],
        type=_proxy,
        help="a proxy whose X-Forwarded-For names the client: an IP address, "
        "or unix for a Unix-socket peer (repeatable; default: none)",
    )
    run.add_argument(
        "--send-timeout",
        default=DEFAULT_SEND_TIMEOUT,
        metavar="SECONDS",
        type=_number(float, "a positive number of seconds", 1e-3),
        help="a send to a client that takes no data for this long drops it",
    )


def _add_keys(commands: argparse._SubParsersAction[_Parser]) -> None:
    keys = commands.add_parser(
        "keys",
        help="create, list and revoke API keys",
        description="Create, list and revoke API keys. The store is "
        f"--db, the DSN in --db-file, or ${ENV_KEYS_DB}.",
        formatter_class=_HelpFormatter,
    )
    keys.set_defaults(parser=keys)
    actions = keys.add_subparsers(dest="action", metavar="{create,list,revoke}")
    create = actions.add_parser(
        "create",
        help="make a key (printed once); creates the store if there is none",
        formatter_class=_HelpFormatter,
    )
    create.add_argument("name", help="the owner (subject) of the key")
    create.add_argument(
        "--scope", action="append", default=[], help="grant a scope (repeatable; default: none)"
    )
    create.add_argument(
        "--expires",
        metavar="WHEN",
        help="lifetime like 30m, 12h, 7d, or a future ISO date/time (default: never)",
    )
    listing = actions.add_parser(
        "list", help="list keys (never the keys themselves)", formatter_class=_HelpFormatter
    )
    revoke = actions.add_parser(
        "revoke", help="revoke a key by its id", formatter_class=_HelpFormatter
    )
    revoke.add_argument("key_id", help="the id that create and list show")
    for action in (create, listing, revoke):
        action.set_defaults(parser=action)
        action.add_argument(
            "--db",
            metavar="PATH|DSN",
            help=f"SQLite file or postgresql:// DSN (default: ${ENV_KEYS_DB})",
        )
        action.add_argument(
            "--db-file",
            metavar="PATH",
            type=Path,
            help="read the --db location (a DSN, say) from this file",
        )


def parser() -> argparse.ArgumentParser:
    """The ``wsauth-sync`` argument parser."""
    top = _Parser(prog="wsauth-sync", description=DESCRIPTION, formatter_class=_HelpFormatter)
    top.set_defaults(parser=top)
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = top.add_subparsers(dest="command", metavar="{echo,keys}")
    _add_echo(commands)
    _add_keys(commands)
    return top


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args, extra = parser().parse_known_args(argv)
    where: argparse.ArgumentParser = args.parser
    if extra:
        where.error(f"unrecognized argument {extra[0]!r}")
    if args.command is None:
        where.error("choose a command: echo or keys")
    if args.command == "keys" and args.action is None:
        where.error("choose an action: create, list or revoke")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.command == "keys":
        return run_keys(args)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    return run_echo(args)
