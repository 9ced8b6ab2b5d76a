"""Where one queue's data lives in Redis.

Every key of a queue shares the hash tag `{stream}`, so the scripts that touch
several of them stay valid on Redis Cluster (all keys in one slot).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from blueprint.infra.queue.message import Priority

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(
            f"{kind} must be 1-100 characters of letters, digits, '_', '.', '-'; got {value!r}"
        )
    return value


@dataclass(frozen=True)
class QueueKeys:
    prefix: str
    stream: str

    def __post_init__(self) -> None:
        if not self.prefix or any(c.isspace() or c in "{}" for c in self.prefix):
            raise ValueError(
                f"queue prefix must be non-empty, without spaces or braces: {self.prefix!r}"
            )
        check_name("stream name", self.stream)

    @property
    def base(self) -> str:
        return f"{self.prefix}:queue:{{{self.stream}}}"

    def priority(self, priority: Priority) -> str:
        """The stream holding ready messages of one priority."""
        return f"{self.base}:{priority.name.lower()}"

    @property
    def streams(self) -> list[str]:
        """Ready streams in reading order, highest priority first."""
        return [self.priority(p) for p in Priority]

    @property
    def delayed(self) -> str:
        """Sorted set of messages waiting for a retry, scored by due time (ms)."""
        return f"{self.base}:delayed"

    @property
    def dead(self) -> str:
        """Stream of messages that failed for good, with their last error."""
        return f"{self.base}:dead"

    def processed(self, group: str, message_id: str) -> str:
        """Marker that `group` committed `message_id`: a redelivery is only acknowledged."""
        return f"{self.base}:done:{group}:{message_id}"

    def running(self, group: str, message_id: str) -> str:
        """Which consumer of `group` is running `message_id` now (see `runs.py`)."""
        return f"{self.base}:running:{group}:{message_id}"
