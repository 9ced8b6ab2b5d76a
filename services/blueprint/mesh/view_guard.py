"""Distrust a discovery read that suddenly loses most of the endpoints (Envoy's panic
threshold, applied to the registry instead of to health checks).

A registry can be wrong all at once: a Redis restarted empty answers "no instances"
until every replica's next heartbeat re-registers it, an API server mid-restart lists
nothing. Believing such a read would fail every call in the meantime, while the
replicas themselves are fine. So a read that keeps fewer than `min_share` of the
endpoints we trust is held back: the client keeps routing to the last trusted view
(plus any newcomer the read names) for up to `hold_seconds`, and only if the read still
says so after that is it believed. A read that shrinks gently (one replica of three
deregistering) is believed at once. Replicas that really died meanwhile cost a failed
transport attempt each, which quarantines them (`pool.py`) and is retried elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from blueprint.mesh.discovery.base import Instance


@dataclass(frozen=True)
class Verdict:
    view: list[Instance]  # what to route to now
    held: bool  # the read was distrusted
    recheck_in: float | None  # when held: seconds until the read would be believed


class ViewGuard:
    def __init__(
        self,
        *,
        min_share: float = 0.5,
        hold_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= min_share <= 1 or hold_seconds < 0:
            raise ValueError("min_share must be in [0, 1] and hold_seconds >= 0")
        self._min_share = min_share
        self._hold = hold_seconds
        self._clock = clock
        self._trusted: list[Instance] = []
        self._shrunk_since: float | None = None

    def offer(self, read: Sequence[Instance]) -> Verdict:
        """The view to use after discovery read `read`."""
        read = list(read)
        if not self._trusted or len(read) >= self._min_share * len(self._trusted):
            return self._believe(read)
        now = self._clock()
        if self._shrunk_since is None:
            self._shrunk_since = now
        waited = now - self._shrunk_since
        if waited >= self._hold:
            return self._believe(read)
        # The last trusted view, updated by what the read does say (newcomers, changes).
        merged = {i.instance_id: i for i in self._trusted}
        merged.update((i.instance_id, i) for i in read)
        return Verdict(
            sorted(merged.values(), key=lambda i: i.instance_id), True, self._hold - waited
        )

    def _believe(self, read: list[Instance]) -> Verdict:
        self._trusted = read
        self._shrunk_since = None
        return Verdict(read, False, None)
