"""API keys in PostgreSQL, shared by every server process and host (needs ``psycopg``).

A database that restarts or stops answering must not wedge the threads that ask it:
every call has a deadline (server-side ``statement_timeout``, and a watchdog that cuts
the socket of a call that overstays it, for a server too frozen to answer), and a
connection found dead is replaced, with reads retried once on the fresh connection.

Revocations are also pushed: :meth:`PostgresKeyStore.revoke` sends ``NOTIFY`` in the
transaction that logs the revocation, and :meth:`PostgresKeyStore.revocation_feed` opens
a connection that ``LISTEN``s for it, so every host hears of it as it commits.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from .core.errors import ConfigurationError
from .core.verifiers import RevocationFeed
from .dbwatch import WATCHDOG, WatchedCall
from .keystore import KeyStore

#: The ``NOTIFY`` channel; each payload is the public id of a revoked key, never a secret.
REVOCATION_CHANNEL = "wsauth_revocations"

#: libpq settings used unless the DSN names them. Keepalives make the kernel notice a
#: database host that vanished while a connection sat idle (about 25 s), so its next use
#: fails at once and is retried on a new connection; tcp_user_timeout drops a connection
#: whose sent data stays unacknowledged. Neither helps against a server that is up but
#: frozen (its kernel still acknowledges): the call watchdog covers that case.
PG_CONNECTION_DEFAULTS = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "15000",
}
#: Seconds past ``query_timeout`` before the watchdog cuts a call the server did not end.
CUT_GRACE = 1.0


class PostgresKeyStore(KeyStore):
    """Keys in PostgreSQL, shared by every server process and host (needs ``psycopg``).

    Args:
        dsn: a libpq connection string or ``postgresql://`` URI; its own settings win
            over :data:`PG_CONNECTION_DEFAULTS`.
        connect_timeout: seconds to open a connection (libpq's ``connect_timeout``).
        query_timeout: seconds a statement may run: the server's ``statement_timeout``;
            a call still unanswered :data:`CUT_GRACE` later has its socket shut down.

    Raises:
        ConfigurationError: psycopg is missing, or a timeout is not positive.
    """

    placeholder = "%s"

    def __init__(self, dsn: str, *, connect_timeout: int = 3, query_timeout: float = 5.0) -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigurationError(
                "PostgreSQL needs psycopg: pip install 'wsauth_sync[postgres]'"
            ) from None
        if connect_timeout <= 0 or query_timeout <= 0:
            raise ConfigurationError("connect_timeout and query_timeout must be positive")
        self._psycopg = psycopg
        self.database_errors = (psycopg.Error,)
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self.query_timeout = query_timeout
        named = psycopg.conninfo.conninfo_to_dict(dsn)
        self._defaults: dict[str, Any] = {
            name: value for name, value in PG_CONNECTION_DEFAULTS.items() if name not in named
        }
        super().__init__()

    def _connect(self) -> Any:
        connection = self._psycopg.connect(
            self.dsn, connect_timeout=self.connect_timeout, **self._defaults
        )
        try:
            with self._deadline(connection):
                # The server ends a slow statement (a lock wait, say) itself, cleanly: the
                # connection stays usable, unlike one whose socket the watchdog cut.
                connection.execute(
                    "SELECT set_config('statement_timeout', %s, false)",
                    (str(max(1, round(self.query_timeout * 1000))),),
                )
                connection.commit()
        except BaseException:
            connection.close()
            raise
        return connection

    @contextmanager
    def _deadline(self, connection: Any) -> Iterator[WatchedCall | None]:
        call = WATCHDOG.arm(
            connection.pgconn.socket, time.monotonic() + self.query_timeout + CUT_GRACE
        )
        try:
            yield call
        finally:
            WATCHDOG.disarm(call)

    def _lost(self, connection: Any, call: WatchedCall | None) -> bool:
        return bool(connection.broken) and not (call is not None and call.cut)

    def _log_revocation(self, cursor: Any, key_id: str, now: float) -> None:
        # EXCLUSIVE mode queues other appenders until this transaction ends, and lets
        # readers through: the entry is numbered after the previous one has committed.
        cursor.execute("LOCK TABLE wsauth_revocations IN EXCLUSIVE MODE")
        super()._log_revocation(cursor, key_id, now)
        # Sent at commit and only if the transaction commits; the payload is the public id.
        cursor.execute("SELECT pg_notify(%s, %s)", (REVOCATION_CHANNEL, key_id))

    def revocation_feed(self) -> RevocationFeed:
        """A connection of its own that ``LISTEN``s for revocations (the caller closes it).

        Raises:
            psycopg.Error: the database could not be reached.
        """
        connection = self._connect()
        try:
            connection.autocommit = True  # LISTEN takes effect at once, not at a commit
            with self._deadline(connection):
                connection.execute(f"LISTEN {REVOCATION_CHANNEL}")
        except BaseException:
            connection.close()
            raise
        return _Listening(connection)

    def __repr__(self) -> str:
        return "PostgresKeyStore(<dsn>)"  # the DSN may hold a password


class _Listening:
    """A PostgreSQL connection that ``LISTEN``s on :data:`REVOCATION_CHANNEL`."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def wait(self, timeout: float, /) -> bool:
        """True once a notification arrives, False after ``timeout`` s without one.

        Raises:
            psycopg.Error: the connection was lost (a restart, a terminated backend).
        """
        for _ in self._connection.notifies(timeout=timeout, stop_after=1):
            return True
        return False

    def close(self) -> None:
        with suppress(Exception):
            self._connection.close()
