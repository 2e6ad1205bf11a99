"""``wsauth-sync keys``: create, list and revoke API keys; where a key store is found.

Also the helpers both commands share: reading a secret from a file and reporting bad
input in one line (exit status 2).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from .core.errors import ConfigurationError
from .keystore import DATABASE_ERRORS, KeyRecord, KeyStore, open_keystore

#: Where a key store's location (a DSN may hold a password) can come from without
#: appearing on the command line, which every local user can read in /proc/PID/cmdline.
ENV_KEYS_DB = "WSAUTH_KEYS_DB"

#: What a command reports in one line (exit status 2) instead of a traceback.
FAILURES: tuple[type[Exception], ...] = (ConfigurationError, *DATABASE_ERRORS)


def fail(message: str) -> int:
    """Report bad input in one line on stderr; returns the exit status (2)."""
    print(f"wsauth-sync: {message}", file=sys.stderr)
    return 2


def read_secret_file(flag: str, path: Path) -> str:
    """The contents of ``path`` without its final line break.

    Raises:
        ConfigurationError: unreadable or empty, naming the flag and the file.
    """
    try:
        text = path.read_text("utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigurationError(f"{flag} {path}: cannot read it ({why})") from None
    if not text.strip():
        raise ConfigurationError(f"{flag} {path}: the file is empty")
    return text


def store_location(
    flag: str, value: str | None, path: Path | None, *, use_env: bool = True
) -> tuple[str, str] | None:
    """A key store location from ``flag``, ``flag-file`` or the environment.

    Returns ``(how it was given, location)``, or None when none was given.
    """
    if value is not None and path is not None:
        raise ConfigurationError(f"give {flag} or {flag}-file, not both")
    if path is not None:
        return f"{flag}-file {path}", read_secret_file(f"{flag}-file", path).strip()
    if value is not None:
        return flag, value
    if use_env and os.environ.get(ENV_KEYS_DB, "").strip():
        return ENV_KEYS_DB, os.environ[ENV_KEYS_DB].strip()
    return None


def is_dsn(location: str) -> bool:
    """A PostgreSQL DSN (which may hold a password), not a SQLite path."""
    return location.startswith(("postgresql://", "postgres://"))


def is_missing_store(location: str) -> bool:
    """True for a SQLite path with no file there (a DSN names a server's database)."""
    return not is_dsn(location) and not Path(location).exists()


def run_keys(args: argparse.Namespace) -> int:
    """The ``keys`` command; returns the exit status."""
    try:
        given = store_location("--db", args.db, args.db_file)
        if given is None:
            return fail(
                f"keys {args.action}: give --db PATH|DSN, --db-file PATH, or set {ENV_KEYS_DB}"
            )
        how, location = given
        created = is_missing_store(location)
        # A DSN may hold a password: name where it came from, never print it.
        label = f"--db {location}" if how == "--db" and not is_dsn(location) else how
        if created and args.action != "create":
            return fail(
                f"{label}: no key store there (make one with 'wsauth-sync keys create NAME')"
            )
        args.expires_at = _when(args.expires) if args.action == "create" else None
        try:
            store = open_keystore(location)
        except FAILURES as exc:
            return fail(f"{label}: {exc}")
        if created:
            print(f"Created the key store {location}", file=sys.stderr)
        return _ACTIONS[args.action](store, args)
    except FAILURES as exc:
        return fail(str(exc))


def _create(store: KeyStore, args: argparse.Namespace) -> int:
    key, record = store.create(args.name, scopes=args.scope, expires_at=args.expires_at)
    print(
        f"Created key {record.key_id} for {record.subject}. Store it now; it is not shown again:",
        file=sys.stderr,
    )
    print(key)
    return 0


def _list(store: KeyStore, args: argparse.Namespace) -> int:
    for line in key_table(store.records(), now=time.time()):
        print(line)
    return 0


def _revoke(store: KeyStore, args: argparse.Namespace) -> int:
    if not store.revoke(args.key_id):
        fail(f"keys revoke {args.key_id}: no active key with that id")
        return 1  # well-formed, but nothing to revoke
    print(f"Revoked {args.key_id}; its open connections close within seconds.")
    return 0


_ACTIONS = {"create": _create, "list": _list, "revoke": _revoke}


def key_table(records: list[KeyRecord], *, now: float) -> list[str]:
    """``keys list`` output: a header and one aligned row per key."""
    rows = [("ID", "OWNER", "SCOPES", "CREATED", "EXPIRES", "LAST USED", "STATUS")]
    for r in records:
        status = (
            "revoked"
            if r.revoked_at is not None
            else "expired"
            if r.expires_at is not None and r.expires_at <= now
            else "active"
        )
        rows.append(
            (
                r.key_id,
                r.subject,
                ",".join(r.scopes) or "-",
                _stamp(r.created_at),
                _stamp(r.expires_at),
                _stamp(r.last_used_at),
                status,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    ]


def _when(text: str | None) -> float | None:
    """``30m``/``12h``/``7d`` from now, or a future ISO date/time, as POSIX time."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[:-1].isdigit() and text[-1:] in units:
        moment = time.time() + int(text[:-1]) * units[text[-1]]
    else:
        try:
            # Python 3.11 reads the trailing Z that `keys list` prints; 3.9 and 3.10 need
            # the offset spelled out.
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            raise ConfigurationError(
                f"--expires {text!r}: not a duration (30m, 12h, 7d) or an ISO date/time"
            ) from None
        moment = (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()
    if moment <= time.time():
        raise ConfigurationError(f"--expires {text!r}: that time has passed")
    return moment


def _stamp(moment: float | None) -> str:
    if moment is None:
        return "-"
    return datetime.fromtimestamp(moment, tz=timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
