from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from blueprint.local.embedded_redis import EmbeddedRedis
from support.redis_server import MACHINE_REDIS_URL, delete_prefix, machine_redis_available


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's Redis when it answers (CI), else a real embedded redis-server."""
    if machine_redis_available():
        yield MACHINE_REDIS_URL
        return
    embedded = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    try:
        yield embedded.start()
    finally:
        embedded.stop()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"bptest-{uuid.uuid4().hex[:12]}"
    yield prefix
    delete_prefix(redis_url, prefix)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path
