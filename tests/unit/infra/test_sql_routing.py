"""Read-after-write routing: who reads the writer, who reads which replica, and fallbacks.

The databases here are SQLite files, each holding its own name, so a read shows where it
went; the routing decisions run on a clock the test moves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from blueprint.infra.sql import WRITER, Database, caller_scope, create_engine
from blueprint.infra.sql.routing import ReadYourWrites, ReplicaRotation

# Nothing listens on port 1: connecting is refused at once.
UNREACHABLE = "postgresql://u@127.0.0.1:1/nothing"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _named_sqlite(path: Path, name: str) -> str:
    url = f"sqlite:///{path / name}.db"
    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE whoami (name TEXT)"))
        await connection.execute(text("INSERT INTO whoami VALUES (:n)"), {"n": name})
    await engine.dispose()
    return url


async def _served_by(database: Database, caller: str | None = None) -> tuple[str, str]:
    async with database.read(caller) as session:
        name = (await session.execute(text("SELECT name FROM whoami"))).scalar_one()
        return session.info["route"], name


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def database(tmp_path: Path, clock: Clock) -> AsyncIterator[Database]:
    urls = [await _named_sqlite(tmp_path, n) for n in ("writer", "replica0", "replica1")]
    db = Database(
        create_engine(urls[0]),
        [create_engine(u) for u in urls[1:]],
        read_your_writes_seconds=5,
        replica_retry_seconds=10,
        clock=clock,
    )
    yield db
    await db.dispose()


async def test_reads_take_the_replicas_in_turn(database: Database) -> None:
    served = [await _served_by(database, "bob") for _ in range(4)]
    assert served == [
        ("replica-0", "replica0"),
        ("replica-1", "replica1"),
        ("replica-0", "replica0"),
        ("replica-1", "replica1"),
    ]


async def test_a_caller_that_wrote_reads_the_writer_for_the_window(
    database: Database, clock: Clock
) -> None:
    async with database.write(caller="alice") as session:
        await session.execute(text("INSERT INTO whoami VALUES ('x')"))
        await session.execute(text("DELETE FROM whoami WHERE name = 'x'"))
    assert await _served_by(database, "alice") == (WRITER, "writer")
    assert (await _served_by(database, "bob"))[0].startswith("replica-")
    clock.now += 4.9
    assert database.read_route("alice") == WRITER
    clock.now += 0.2
    assert database.read_route("alice") == "replica-1"
    assert (await _served_by(database, "alice"))[0].startswith("replica-")


async def test_a_failed_write_pins_no_one(database: Database) -> None:
    with pytest.raises(RuntimeError):
        async with database.write(caller="alice") as session:
            await session.execute(text("INSERT INTO whoami VALUES ('x')"))
            raise RuntimeError("the domain refused")
    assert database.read_route("alice") != WRITER
    async with database.read("alice") as session:  # and the write was rolled back
        assert (await session.execute(text("SELECT count(*) FROM whoami"))).scalar_one() == 1


async def test_the_caller_comes_from_the_context_when_not_passed(database: Database) -> None:
    with caller_scope("carol"):
        async with database.write() as session:
            await session.execute(text("SELECT 1"))
        assert await _served_by(database) == (WRITER, "writer")
    assert database.read_route("carol") == WRITER
    assert database.read_route("dave") != WRITER
    assert database.read_route() != WRITER  # outside the scope: anonymous


async def test_anonymous_writes_pin_no_one(database: Database) -> None:
    async with database.write() as session:
        await session.execute(text("SELECT 1"))
    assert database.read_route() != WRITER


async def test_no_replicas_means_every_read_goes_to_the_writer(tmp_path: Path) -> None:
    database = Database.from_urls(await _named_sqlite(tmp_path, "only"))
    try:
        assert await _served_by(database, "bob") == (WRITER, "only")
    finally:
        await database.dispose()


async def test_an_unreachable_replica_is_skipped_and_retried_later(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    writer = await _named_sqlite(tmp_path, "writer")
    replica = await _named_sqlite(tmp_path, "replica")
    database = Database(
        create_engine(writer),
        [create_engine(UNREACHABLE), create_engine(replica)],
        replica_retry_seconds=10,
        clock=clock,
    )
    try:
        assert await _served_by(database, "bob") == ("replica-1", "replica")
        assert "replica-0" in caplog.text and "unreachable" in caplog.text
        # While it is down, the other replica takes every read, without a connect attempt.
        served = [await _served_by(database, "bob") for _ in range(3)]
        assert served == [("replica-1", "replica")] * 3
        clock.now += 10
        assert database.read_route("bob") == "replica-0"  # tried again after retry_seconds
    finally:
        await database.dispose()


async def test_with_every_replica_unreachable_the_writer_serves(tmp_path: Path) -> None:
    database = Database(
        create_engine(await _named_sqlite(tmp_path, "writer")),
        [create_engine(UNREACHABLE), create_engine(UNREACHABLE)],
    )
    try:
        assert await _served_by(database, "bob") == (WRITER, "writer")
        assert await _served_by(database, "bob") == (WRITER, "writer")
    finally:
        await database.dispose()


def test_read_your_writes_forgets_callers_once_their_window_passed() -> None:
    clock = Clock()
    recent = ReadYourWrites(5, clock=clock)
    for n in range(1000):
        recent.note_write(f"user-{n}")
        clock.now += 0.01
    clock.now += 5
    recent.note_write("last")
    assert len(recent) == 1  # memory holds one window of writers, not every writer ever
    assert recent.pinned_to_writer("last")
    assert not recent.pinned_to_writer("user-999")


def test_a_zero_window_never_pins() -> None:
    recent = ReadYourWrites(0)
    recent.note_write("alice")
    assert not recent.pinned_to_writer("alice")


@pytest.mark.parametrize("window", [-1, float("nan"), True])
def test_a_bad_window_is_refused(window: float) -> None:
    with pytest.raises(ValueError, match="read_your_writes_seconds"):
        ReadYourWrites(window)


def test_rotation_skips_a_replica_marked_down_until_its_retry() -> None:
    clock = Clock()
    rotation = ReplicaRotation(3, retry_seconds=2, clock=clock)
    assert [rotation.order()[0] for _ in range(4)] == [0, 1, 2, 0]
    rotation.mark_down(2)
    assert [rotation.order() for _ in range(3)] == [[1, 0], [0, 1], [0, 1]]
    clock.now += 2
    assert rotation.order() == [1, 2, 0]
    assert ReplicaRotation(0, retry_seconds=1).order() == []
