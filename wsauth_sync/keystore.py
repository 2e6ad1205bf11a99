"""Revocable API keys in SQLite (the zero set-up default) or PostgreSQL (shared by many).

A key looks like ``wsk_<key id>_<secret>``. Only its SHA-256 is stored: a leaked
database gives no usable key. The key id is public (it names the key in listings, logs
and revocations); the secret part has 256 bits of entropy, so a plain hash suffices (no
salt or slow hash is needed for random keys, unlike passwords). Lookups are by hash with
bound parameters. A database error is a 503, never a 401 and never a 101.

The PostgreSQL store (:mod:`.pgstore`) bounds every call, so a database that restarts
or stops answering cannot wedge the threads that ask it.

Use a :class:`KeyStore` as the verifier of a :class:`~wsauth_sync.WebSocketApp`; it also
reports revocations, so open connections of a revoked key are closed with 1008. Each
revocation is appended to a numbered log that watchers read by position ("everything after
entry n"), never by time: hosts whose clocks disagree cannot miss one. PostgreSQL also
announces each one with ``NOTIFY`` as it commits
(:meth:`~.pgstore.PostgresKeyStore.revocation_feed`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from .core.errors import ConfigurationError, InvalidToken, ServiceUnavailable
from .core.verifiers import Identity
from .dbconn import ThreadConnection
from .dbwatch import WatchedCall

logger = logging.getLogger("wsauth_sync")
T = TypeVar("T")

KEY_PREFIX = "wsk"
#: Seconds between ``last_used_at`` writes for one key: a busy key is not a write per use.
LAST_USED_RESOLUTION = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS wsauth_keys (
    key_id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    scopes TEXT NOT NULL DEFAULT '',
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION,
    revoked_at DOUBLE PRECISION,
    last_used_at DOUBLE PRECISION
)"""

# The revocation log: entry numbers follow commit order (see KeyStore._log_revocation).
_LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS wsauth_revocations (
    seq BIGINT PRIMARY KEY,
    key_id TEXT NOT NULL,
    revoked_at DOUBLE PRECISION NOT NULL
)"""


@dataclass(frozen=True)
class KeyRecord:
    """What the store knows of a key (never the key itself)."""

    key_id: str
    subject: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> KeyRecord:
        key_id, subject, scopes, created, expires, revoked, used = row
        return cls(
            str(key_id),
            str(subject),
            tuple(str(scopes).split()),
            float(created),
            _opt(expires),
            _opt(revoked),
            _opt(used),
        )


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _key_id(token: str) -> str | None:
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != KEY_PREFIX or len(key_id) != 12 or not secret:
        return None
    return key_id


class KeyStore:
    """API keys in a database reached through DB-API connections, one per thread.

    Use :func:`open_keystore` (a path or a ``postgresql://`` DSN) rather than this base.
    A thread's connection is closed when the thread ends (or by :meth:`close_connection`).
    """

    #: The backend's parameter placeholder.
    placeholder = "?"
    #: Exceptions that mean "the database failed", turned into 503.
    database_errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def __init__(self) -> None:
        self._local = threading.local()
        self._used: dict[str, float] = {}
        with self._cursor() as cursor:
            cursor.execute(_SCHEMA)
            cursor.execute(_LOG_SCHEMA)
            cursor.execute(
                "CREATE INDEX IF NOT EXISTS wsauth_keys_revoked ON wsauth_keys (revoked_at)"
            )

    def _connect(self) -> Any:
        raise NotImplementedError

    @contextmanager
    def _deadline(self, connection: Any) -> Iterator[WatchedCall | None]:
        """Bound one exchange with the database (a local file needs no bound)."""
        yield None

    def _lost(self, connection: Any, call: WatchedCall | None) -> bool:
        """Whether ``connection`` was found dead (rather than the call failing or timing out)."""
        return False

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        """A cursor in a transaction, committed on success, every exchange under a deadline.

        A database error drops the thread's connection: the next call opens a new one.
        """
        held: ThreadConnection | None = getattr(self._local, "held", None)
        if held is None or held.inherited:  # a forked child opens its own
            held = self._local.held = ThreadConnection(self._connect())
        connection = held.connection
        call = None
        try:
            with self._deadline(connection) as call:
                cursor = connection.cursor()
                try:
                    yield cursor
                    connection.commit()
                finally:
                    cursor.close()
        except self.database_errors:
            self._local.lost = self._lost(connection, call)
            self.close_connection()
            raise
        except BaseException:
            try:
                with self._deadline(connection):
                    connection.rollback()
            except self.database_errors:
                self.close_connection()
            raise

    def _run(self, work: Callable[[Any], T], *, repeatable: bool = False) -> T:
        """``work(cursor)`` in a transaction; a repeatable one runs once more, on a new
        connection, when the thread's connection turns out dead.

        After a database restart every thread's connection fails on its next use: for a
        read or an idempotent write that costs a reconnect instead of a 503.
        """
        held: ThreadConnection | None = getattr(self._local, "held", None)
        reused = held is not None and not held.inherited
        try:
            with self._cursor() as cursor:
                return work(cursor)
        except self.database_errors:
            if not (repeatable and reused and getattr(self._local, "lost", False)):
                raise
        with self._cursor() as cursor:
            return work(cursor)

    def _read(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        def fetch(cursor: Any) -> list[Any]:
            cursor.execute(self._sql(statement), params)
            return list(cursor.fetchall())

        return self._run(fetch, repeatable=True)

    def close_connection(self) -> None:
        """Close the calling thread's connection, if it has one (a thread about to end)."""
        held, self._local.held = getattr(self._local, "held", None), None
        if held is not None:
            held.close()

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.placeholder)

    # -- administration -----------------------------------------------------------------

    def create(
        self, subject: str, *, scopes: Sequence[str] = (), expires_at: float | None = None
    ) -> tuple[str, KeyRecord]:
        """Make a key for ``subject``; returns the key (shown once) and its record."""
        if not subject or any(" " in scope or not scope for scope in scopes):
            raise ConfigurationError("a key needs a subject; scopes are single words")
        key_id = secrets.token_hex(6)
        key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        record = KeyRecord(key_id, subject, tuple(scopes), time.time(), expires_at, None, None)
        with self._cursor() as cursor:
            cursor.execute(
                self._sql(
                    "INSERT INTO wsauth_keys (key_id, key_hash, subject, scopes, created_at, "
                    "expires_at) VALUES (?, ?, ?, ?, ?, ?)"
                ),
                (key_id, _digest(key), subject, " ".join(scopes), record.created_at, expires_at),
            )
        return key, record

    def records(self) -> list[KeyRecord]:
        """Every key, oldest first."""
        rows = self._read(
            "SELECT key_id, subject, scopes, created_at, expires_at, revoked_at, "
            "last_used_at FROM wsauth_keys ORDER BY created_at"
        )
        return [KeyRecord.from_row(row) for row in rows]

    def revoke(self, key_id: str) -> bool:
        """Revoke a key by its id; False if no such (unrevoked) key.

        The key is marked and its revocation logged in one transaction: watchers see both
        or neither. ``revoked_at`` is this host's time, for listings only.
        """
        now = time.time()
        with self._cursor() as cursor:
            cursor.execute(
                self._sql(
                    "UPDATE wsauth_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL"
                ),
                (now, key_id),
            )
            if not cursor.rowcount:
                return False
            self._log_revocation(cursor, key_id, now)
            return True

    def _log_revocation(self, cursor: Any, key_id: str, now: float) -> None:
        """Append the revocation to the log, numbered one past the last entry.

        Appenders take turns (SQLite has one writer at a time; PostgreSQL locks the log
        first), so entries commit in number order: a reader that sees entry n sees every
        entry before it, and "after n" never skips one still being committed.
        """
        cursor.execute(
            self._sql(
                "INSERT INTO wsauth_revocations (seq, key_id, revoked_at) "
                "SELECT coalesce(max(seq), 0) + 1, ?, ? FROM wsauth_revocations"
            ),
            (key_id, now),
        )

    # -- verification -------------------------------------------------------------------

    def __call__(self, token: str, /) -> Identity:
        """Verify an API key.

        Raises:
            InvalidToken: unknown, malformed, expired or revoked key (401).
            ServiceUnavailable: the database failed (503).
        """
        key_id = _key_id(token)
        if key_id is None:
            raise InvalidToken("malformed_key")  # no database work for junk
        digest = _digest(token)
        try:
            rows = self._read(
                "SELECT key_id, subject, scopes, created_at, expires_at, "
                "revoked_at, last_used_at, key_hash FROM wsauth_keys "
                "WHERE key_hash = ?",
                (digest,),
            )
            if (
                not rows
                or not hmac.compare_digest(str(rows[0][-1]), digest)
                or str(rows[0][0]) != key_id
            ):
                raise InvalidToken("unknown_key")
            record = KeyRecord.from_row(rows[0][:-1])
            now = time.time()
            if record.revoked_at is not None:
                raise InvalidToken("revoked_key", detail=record.key_id)
            if record.expires_at is not None and record.expires_at <= now:
                raise InvalidToken("expired_key", detail=record.key_id)
            self._touch(record.key_id, now)
        except self.database_errors as exc:
            raise ServiceUnavailable("keystore_error", detail=type(exc).__name__) from None
        return Identity(
            subject=record.subject,
            claims={"key_id": record.key_id, "scopes": list(record.scopes)},
            expires_at=record.expires_at,
            credential_id=record.key_id,
        )

    def _touch(self, key_id: str, now: float) -> None:
        if now - self._used.get(key_id, 0.0) < LAST_USED_RESOLUTION:
            return
        self._used[key_id] = now
        statement = self._sql("UPDATE wsauth_keys SET last_used_at = ? WHERE key_id = ?")
        self._run(lambda cursor: cursor.execute(statement, (now, key_id)), repeatable=True)

    def revoked_after(self, position: int, /) -> tuple[list[str], int]:
        """Ids of keys whose revocation was logged after entry ``position`` (0: every one).

        Returns:
            The ids, and the position to ask from next time (the last entry read).
        """
        rows = self._read(
            "SELECT seq, key_id FROM wsauth_revocations WHERE seq > ? ORDER BY seq", (position,)
        )
        return [str(row[1]) for row in rows], max([position, *(int(row[0]) for row in rows)])


class SQLiteKeyStore(KeyStore):
    """Keys in one SQLite file: WAL mode, so many threads read while one writes.

    A new file is created readable by its owner only (0600); SQLite gives its ``-wal`` and
    ``-shm`` files the same mode. An existing file keeps its mode, with a warning if
    other users may open it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        _create_private(path)
        super().__init__()

    def _connect(self) -> sqlite3.Connection:
        # Used by one thread only; check_same_thread=False lets it be closed from
        # whichever thread drops the store (see .dbconn).
        connection = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA busy_timeout=5000")
        return connection

    def __repr__(self) -> str:
        return f"SQLiteKeyStore({self.path!r})"


def _create_private(path: str) -> None:
    if path in ("", ":memory:") or path.startswith("file:"):
        return
    try:
        # Created 0600 in one step, before SQLite opens it: there is no moment at which
        # the umask's wider mode applies (a later chmod would leave one).
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return
    except FileExistsError:
        pass
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        logger.warning("key store %s is open to other users (mode %03o): chmod 600 it", path, mode)


def _database_errors() -> tuple[type[Exception], ...]:
    try:
        import psycopg
    except ImportError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


def open_keystore(location: str) -> KeyStore:
    """A SQLite store for a file path, a PostgreSQL store for a ``postgresql://`` DSN."""
    if location.startswith(("postgresql://", "postgres://")):
        from .pgstore import PostgresKeyStore  # imports keystore: not at module level

        return PostgresKeyStore(location)
    return SQLiteKeyStore(location)


def __getattr__(name: str) -> Any:
    # DATABASE_ERRORS, every database error a store can raise, includes psycopg's when it
    # is installed: computed on first use, so importing the package never loads psycopg.
    if name == "DATABASE_ERRORS":
        return _database_errors()
    # PostgresKeyStore and its settings moved to .pgstore; older imports keep working.
    if name in ("PostgresKeyStore", "PG_CONNECTION_DEFAULTS", "CUT_GRACE"):
        from . import pgstore

        return getattr(pgstore, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
