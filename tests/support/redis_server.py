"""Which Redis the tests use: the machine's, or an embedded one when there is none."""

from __future__ import annotations

import os

import redis

MACHINE_REDIS_URL = os.environ.get("BLUEPRINT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def machine_redis_available(url: str = MACHINE_REDIS_URL) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
