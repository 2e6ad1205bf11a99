"""Revocable API keys in SQLite (the zero set-up default) or PostgreSQL (shared by many).

A key looks like ``wsk_<key id>_<secret>``. Only its SHA-256 is stored: a leaked
database gives no usable key. The key id is public (it names the key in listings, logs
and revocations); the secret part has 256 bits of entropy, so a plain hash suffices (no
salt or slow hash is needed for random keys, unlike passwords). Lookups are by hash with
bound parameters. A database error is a 503, never a 401 and never a 101.

Use a :class:`KeyStore` as the verifier of a :class:`~wsauth_sync.WebSocketApp`; it also
reports revocations, so open connections of a revoked key are closed with 1008.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError, InvalidToken, ServiceUnavailable
from .verifiers import Identity

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
        return cls(str(key_id), str(subject), tuple(str(scopes).split()), float(created),
                   _opt(expires), _opt(revoked), _opt(used))


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
            cursor.execute("CREATE INDEX IF NOT EXISTS wsauth_keys_revoked "
                           "ON wsauth_keys (revoked_at)")

    def _connect(self) -> Any:
        raise NotImplementedError

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect()
        try:
            cursor = connection.cursor()
            try:
                yield cursor
                connection.commit()
            finally:
                cursor.close()
        except self.database_errors:
            # The connection may be broken (server restarted): start afresh next time.
            self._local.connection = None
            with suppress(Exception):
                connection.close()
            raise
        except BaseException:
            connection.rollback()
            raise

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.placeholder)

    # -- administration -----------------------------------------------------------------

    def create(self, subject: str, *, scopes: Sequence[str] = (),
               expires_at: float | None = None) -> tuple[str, KeyRecord]:
        """Make a key for ``subject``; returns the key (shown once) and its record."""
        if not subject or any(" " in scope or not scope for scope in scopes):
            raise ConfigurationError("a key needs a subject; scopes are single words")
        key_id = secrets.token_hex(6)
        key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        record = KeyRecord(key_id, subject, tuple(scopes), time.time(), expires_at, None, None)
        with self._cursor() as cursor:
            cursor.execute(self._sql(
                "INSERT INTO wsauth_keys (key_id, key_hash, subject, scopes, created_at, "
                "expires_at) VALUES (?, ?, ?, ?, ?, ?)"),
                (key_id, _digest(key), subject, " ".join(scopes), record.created_at, expires_at))
        return key, record

    def records(self) -> list[KeyRecord]:
        """Every key, oldest first."""
        with self._cursor() as cursor:
            cursor.execute("SELECT key_id, subject, scopes, created_at, expires_at, revoked_at, "
                           "last_used_at FROM wsauth_keys ORDER BY created_at")
            return [KeyRecord.from_row(row) for row in cursor.fetchall()]

    def revoke(self, key_id: str) -> bool:
        """Revoke a key by its id; False if no such (unrevoked) key."""
        with self._cursor() as cursor:
            cursor.execute(self._sql("UPDATE wsauth_keys SET revoked_at = ? "
                                     "WHERE key_id = ? AND revoked_at IS NULL"),
                           (time.time(), key_id))
            return bool(cursor.rowcount)

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
            with self._cursor() as cursor:
                cursor.execute(self._sql(
                    "SELECT key_id, subject, scopes, created_at, expires_at, revoked_at, "
                    "last_used_at, key_hash FROM wsauth_keys WHERE key_hash = ?"), (digest,))
                row = cursor.fetchone()
            record = None if row is None else KeyRecord.from_row(row[:-1])
            if record is None or not hmac.compare_digest(str(row[-1]), digest) \
                    or record.key_id != key_id:
                raise InvalidToken("unknown_key")
            now = time.time()
            if record.revoked_at is not None:
                raise InvalidToken("revoked_key", detail=record.key_id)
            if record.expires_at is not None and record.expires_at <= now:
                raise InvalidToken("expired_key", detail=record.key_id)
            self._touch(record.key_id, now)
        except self.database_errors as exc:
            raise ServiceUnavailable("keystore_error", detail=type(exc).__name__) from None
        return Identity(subject=record.subject,
                        claims={"key_id": record.key_id, "scopes": list(record.scopes)},
                        expires_at=record.expires_at, credential_id=record.key_id)

    def _touch(self, key_id: str, now: float) -> None:
        if now - self._used.get(key_id, 0.0) < LAST_USED_RESOLUTION:
            return
        self._used[key_id] = now
        with self._cursor() as cursor:
            cursor.execute(self._sql("UPDATE wsauth_keys SET last_used_at = ? WHERE key_id = ?"),
                           (now, key_id))

    def revoked_since(self, since: float) -> list[str]:
        """Ids of keys revoked at or after ``since`` (for closing their connections)."""
        with self._cursor() as cursor:
            cursor.execute(self._sql("SELECT key_id FROM wsauth_keys WHERE revoked_at >= ?"),
                           (since,))
            return [str(row[0]) for row in cursor.fetchall()]


class SQLiteKeyStore(KeyStore):
    """Keys in one SQLite file: WAL mode, so many threads read while one writes."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=5.0)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA busy_timeout=5000")
        return connection

    def __repr__(self) -> str:
        return f"SQLiteKeyStore({self.path!r})"


class PostgresKeyStore(KeyStore):
    """Keys in PostgreSQL, shared by every server process and host (needs ``psycopg``)."""

    placeholder = "%s"

    def __init__(self, dsn: str, *, connect_timeout: int = 3) -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigurationError("PostgreSQL needs psycopg: pip install "
                                     "'wsauth_sync[postgres]'") from None
        self._psycopg = psycopg
        self.database_errors = (psycopg.Error,)
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        super().__init__()

    def _connect(self) -> Any:
        return self._psycopg.connect(self.dsn, connect_timeout=self.connect_timeout)

    def __repr__(self) -> str:
        return "PostgresKeyStore(<dsn>)"  # the DSN may hold a password


def _database_errors() -> tuple[type[Exception], ...]:
    try:
        import psycopg
    except ImportError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


#: Every database error a store can raise (psycopg's only when it is installed).
DATABASE_ERRORS = _database_errors()


def open_keystore(location: str) -> KeyStore:
    """A SQLite store for a file path, a PostgreSQL store for a ``postgresql://`` DSN."""
    if location.startswith(("postgresql://", "postgres://")):
        return PostgresKeyStore(location)
    return SQLiteKeyStore(location)
