"""Every driver and pool failure class that means "the store did not answer" is an
outage (UNAVAILABLE at the edge); errors of the request or the code are not."""

from __future__ import annotations

import sqlite3

import asyncpg.exceptions as pg
import pytest
import redis.exceptions as redis_errors
import sqlalchemy.exc as sa

from blueprint.errors import StoreUnavailable
from blueprint.infra.deadline import StoreTimeout
from blueprint.infra.outages import is_outage, translated, unavailable


def _wrapped_by_sqlalchemy(driver_error: BaseException) -> sa.DBAPIError:
    """How SQLAlchemy's asyncpg dialect hands a driver error up: its own DBAPI-style error
    raised from asyncpg's, wrapped in a DBAPIError (or a subclass) whose `orig` it is."""
    adapted = Exception(str(driver_error))
    adapted.__cause__ = driver_error
    return sa.DBAPIError("SELECT 1", {}, adapted)


OUTAGES = {
    # SQLAlchemy and the pool
    "sqlalchemy OperationalError (sqlite locked)": sa.OperationalError(
        "INSERT", {}, sqlite3.OperationalError("database is locked")
    ),
    "sqlalchemy InterfaceError": sa.InterfaceError("SELECT 1", {}, Exception("closed")),
    "sqlalchemy pool TimeoutError": sa.TimeoutError("QueuePool limit reached, timed out"),
    "sqlalchemy DisconnectionError": sa.DisconnectionError("pre-ping failed"),
    "sqlalchemy DBAPIError, connection invalidated": sa.DBAPIError(
        "SELECT 1", {}, Exception("gone"), connection_invalidated=True
    ),
    # asyncpg, wrapped as SQLAlchemy delivers it, judged by SQLSTATE class
    "connection was closed in the middle of operation": _wrapped_by_sqlalchemy(
        pg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    ),
    "asyncpg cannot connect now (57P03)": _wrapped_by_sqlalchemy(
        pg.CannotConnectNowError("the database system is starting up")
    ),
    "asyncpg admin shutdown (57P01)": _wrapped_by_sqlalchemy(pg.AdminShutdownError("bye")),
    "asyncpg too many connections (53300)": _wrapped_by_sqlalchemy(
        pg.TooManyConnectionsError("sorry, too many clients already")
    ),
    "asyncpg statement_timeout (57014)": _wrapped_by_sqlalchemy(
        pg.QueryCanceledError("canceling statement due to statement timeout")
    ),
    "asyncpg serialization failure (40001)": _wrapped_by_sqlalchemy(pg.SerializationError("")),
    "asyncpg deadlock (40P01)": _wrapped_by_sqlalchemy(pg.DeadlockDetectedError("")),
    "asyncpg read-only standby (25006)": _wrapped_by_sqlalchemy(
        pg.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction")
    ),
    "asyncpg bad password (28P01)": _wrapped_by_sqlalchemy(pg.InvalidPasswordError("")),
    "asyncpg database dropped (3D000)": _wrapped_by_sqlalchemy(pg.InvalidCatalogNameError("")),
    "asyncpg raw connection error": pg.ConnectionDoesNotExistError("closed"),
    # aiosqlite hands sqlite3's errors through
    "sqlite3 database is locked": sqlite3.OperationalError("database is locked"),
    # redis-py
    "redis ConnectionError": redis_errors.ConnectionError("Connection refused"),
    "redis TimeoutError": redis_errors.TimeoutError("Timeout reading from socket"),
    "redis BusyLoadingError": redis_errors.BusyLoadingError("LOADING"),
    "redis pool exhausted": redis_errors.MaxConnectionsError("Too many connections"),
    "redis ReadOnlyError": redis_errors.ReadOnlyError("READONLY replica"),
    "redis OutOfMemoryError": redis_errors.OutOfMemoryError("OOM command not allowed"),
    "redis ClusterDownError": redis_errors.ClusterDownError("CLUSTERDOWN"),
    "redis TryAgainError": redis_errors.TryAgainError("TRYAGAIN"),
    "redis MISCONF reply": redis_errors.ResponseError("MISCONF unable to persist"),
    "redis MASTERDOWN reply": redis_errors.ResponseError("MASTERDOWN link with master down"),
    # sockets and timeouts
    "refused": ConnectionRefusedError(111, "Connection refused"),
    "reset": ConnectionResetError(104, "Connection reset by peer"),
    "broken pipe": BrokenPipeError(32, "Broken pipe"),
    "timeout (asyncio.TimeoutError is TimeoutError)": TimeoutError(),
    "store budget spent": StoreTimeout(0.5),
}

NOT_OUTAGES = {
    "unique violation": sa.IntegrityError(
        "INSERT", {}, pg.UniqueViolationError("duplicate key value")
    ),
    "a bug in a query": _wrapped_by_sqlalchemy(pg.UndefinedColumnError("no such column")),
    "redis wrong type": redis_errors.ResponseError("WRONGTYPE Operation against a key"),
    "redis data error": redis_errors.DataError("Invalid input"),
    "a plain bug": KeyError("x"),
    "a value refused": ValueError("bad"),
}


@pytest.mark.parametrize("error", OUTAGES.values(), ids=OUTAGES.keys())
def test_every_store_failure_class_is_an_outage(error: BaseException) -> None:
    assert is_outage(error)
    failure = unavailable("db/writer", error)
    assert isinstance(failure, StoreUnavailable)
    assert failure.dependency == "db/writer"
    assert failure.retry_after is None  # only an open breaker knows when to come back


@pytest.mark.parametrize("error", NOT_OUTAGES.values(), ids=NOT_OUTAGES.keys())
def test_errors_of_the_request_or_the_code_are_not_outages(error: BaseException) -> None:
    assert not is_outage(error)
    assert unavailable("db/writer", error) is None


def test_the_failure_names_the_driver_error_that_caused_it() -> None:
    error = _wrapped_by_sqlalchemy(
        pg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    )
    failure = unavailable("shortener/shard-0/writer", error)
    assert failure is not None
    assert str(failure) == (
        "shortener/shard-0/writer: ConnectionDoesNotExistError: "
        "connection was closed in the middle of operation"
    )


def test_an_error_raised_while_handling_an_outage_is_not_one() -> None:
    try:
        try:
            raise redis_errors.ConnectionError("down")
        except redis_errors.ConnectionError:
            raise LookupError("no link 'abc'")  # noqa: B904 (the point: implicit context)
    except LookupError as error:
        assert error.__context__ is not None
        assert not is_outage(error)


def test_translated_raises_store_unavailable_from_the_driver_error() -> None:
    cause = redis_errors.ConnectionError("Connection refused")
    with pytest.raises(StoreUnavailable) as raised, translated("shortener/redis"):
        raise cause
    assert raised.value.__cause__ is cause
    with pytest.raises(KeyError), translated("shortener/redis"):
        raise KeyError("untouched")


def test_a_store_unavailable_passes_through_unchanged() -> None:
    original = StoreUnavailable("blobs", "disk full", retry_after=1.0)
    with pytest.raises(StoreUnavailable) as raised, translated("shortener"):
        raise original
    assert raised.value is original
