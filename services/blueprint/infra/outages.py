"""Which driver errors mean "the store did not answer": the one classification.

Every failure class of SQLAlchemy, asyncpg, aiosqlite/sqlite3 and redis-py that says
the store is unreachable, overloaded, shutting down, timed out or in failover is an
outage; `unavailable(...)` turns it into the plain `StoreUnavailable`, which the gRPC
edge answers as UNAVAILABLE (retryable). Anything else (a unique key violated, a bug in
a query) is not an outage and passes through unchanged.

Drivers wrap each other's errors (SQLAlchemy's DBAPIError around asyncpg's
ConnectionDoesNotExistError: "connection was closed in the middle of operation"), so the
whole cause chain is looked at, and PostgreSQL errors are judged by their SQLSTATE class
rather than a list of classes that would always miss one.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

from redis import exceptions as redis_errors
from sqlalchemy import exc as sql_errors

from blueprint.errors import StoreUnavailable

_OUTAGE_CLASSES: tuple[type[BaseException], ...] = (
    # SQLAlchemy: the DBAPI's OperationalError/InterfaceError (lost or refused connection,
    # "database is locked"), the pool's wait for a connection, a failed pre-ping.
    sql_errors.OperationalError,
    sql_errors.InterfaceError,
    sql_errors.TimeoutError,
    sql_errors.DisconnectionError,
    sqlite3.OperationalError,
    # redis-py: ConnectionError covers refused, reset, BusyLoadingError (LOADING), the
    # pool out of connections and authentication; ReadOnlyError is a replica mid-failover.
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    redis_errors.OutOfMemoryError,
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    # Sockets: refused, reset, unreachable; TimeoutError (asyncio's too) is an OSError.
    OSError,
)
# SQLSTATE classes: 08 connection exception, 28 and 3D the server refusing us (bad
# credentials, database dropped: it serves nobody until fixed), 40 transaction rollback
# (serialization failure, deadlock: retry), 53 insufficient resources (too many
# connections, disk full), 57 operator intervention (shutdown, cannot connect now,
# statement cancelled by statement_timeout), 58 system error (I/O).
_OUTAGE_SQLSTATE_CLASSES = frozenset({"08", "28", "3D", "40", "53", "57", "58"})
_OUTAGE_SQLSTATES = frozenset({"25006"})  # read-only transaction: a standby, mid-failover
# Redis replies that redis-py leaves as a plain ResponseError.
_OUTAGE_REPLIES = ("MISCONF", "MASTERDOWN", "NOREPLICAS", "LOADING", "READONLY")
_CHAIN_DEPTH = 8


def is_outage(error: BaseException) -> bool:
    """True when `error`, or an error it wraps, says the store did not answer."""
    return _outage_cause(error) is not None


def unavailable(
    dependency: str, error: BaseException, *, kind: type[StoreUnavailable] = StoreUnavailable
) -> StoreUnavailable | None:
    """A `kind` (StoreUnavailable) for an outage of `dependency`, naming its cause; None
    when `error` is no outage. A StoreUnavailable already is one, and is returned as is."""
    if isinstance(error, StoreUnavailable):
        return error
    cause = _outage_cause(error)
    if cause is None:
        return None
    detail = str(cause).strip().splitlines()[0][:200] if str(cause).strip() else ""
    reason = type(cause).__name__ + (f": {detail}" if detail else "")
    return kind(dependency, reason)


@contextlib.contextmanager
def translated(dependency: str) -> Iterator[None]:
    """Outages raised inside become `StoreUnavailable(dependency)`; nothing else changes."""
    try:
        yield
    except Exception as error:
        failure = unavailable(dependency, error)
        if failure is None or failure is error:
            raise
        raise failure from error


def _outage_cause(error: BaseException) -> BaseException | None:
    seen: set[int] = set()
    current: BaseException | None = error
    for _ in range(_CHAIN_DEPTH):
        if current is None or id(current) in seen:
            return None
        seen.add(id(current))
        if _is_outage_itself(current):
            return current
        # Only explicit wrapping (SQLAlchemy's `orig`, `raise ... from`): an error merely
        # raised while handling an outage (its __context__) is not one.
        wrapped = getattr(current, "orig", None)
        current = wrapped if isinstance(wrapped, BaseException) else current.__cause__
    return None


def _is_outage_itself(error: BaseException) -> bool:
    if isinstance(error, _OUTAGE_CLASSES):
        return True
    if isinstance(error, sql_errors.DBAPIError) and error.connection_invalidated:
        return True
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str) and (
        sqlstate[:2] in _OUTAGE_SQLSTATE_CLASSES or sqlstate in _OUTAGE_SQLSTATES
    ):
        return True
    return isinstance(error, redis_errors.ResponseError) and str(error).startswith(_OUTAGE_REPLIES)
