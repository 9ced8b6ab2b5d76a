"""Click events: their payload, their message ids, and publishing off the request path."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from blueprint.shortener.clicks import CLICK_STREAM, Click, ClickPublisher, message_id


def test_a_click_survives_its_payload() -> None:
    click = Click("abc", 2**62, datetime(2026, 3, 1, 23, 30, tzinfo=UTC))
    assert Click.from_payload(click.payload()) == click


def test_a_click_counts_on_its_utc_day() -> None:
    evening_in_new_york = datetime(2026, 3, 1, 21, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert Click("abc", 1, evening_in_new_york).day == date(2026, 3, 2)


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        {},
        {"code": "", "link_id": 1, "at": "2026-03-01T00:00:00+00:00"},
        {"code": "abc", "link_id": "1", "at": "2026-03-01T00:00:00+00:00"},
        {"code": "abc", "link_id": True, "at": "2026-03-01T00:00:00+00:00"},
        {"code": "abc", "link_id": 1, "at": "yesterday"},
        {"code": "abc", "link_id": 1, "at": "2026-03-01T00:00:00"},  # no time zone
    ],
)
def test_payloads_that_are_not_clicks_are_refused(payload: Any) -> None:
    with pytest.raises(ValueError):
        Click.from_payload(payload)


def test_message_ids_repeat_only_for_the_same_request_id() -> None:
    assert message_id("abc", "r1") == message_id("abc", "r1") == "click:abc:r1"
    assert message_id("abd", "r1") != message_id("abc", "r1")
    assert message_id("abc", "") != message_id("abc", "")


class SlowQueue:
    def __init__(self, fail: bool = False) -> None:
        self.release = asyncio.Event()
        self.published: list[tuple[str, Any, str | None]] = []
        self.fail = fail

    async def publish(self, stream: str, payload: Any, **options: Any) -> str:
        await self.release.wait()
        if self.fail:
            raise ConnectionError("redis is away")
        self.published.append((stream, payload, options.get("message_id")))
        return str(options.get("message_id"))


async def test_publishing_does_not_wait_and_drops_beyond_the_limit() -> None:
    queue = SlowQueue()
    dropped: list[int] = []
    publisher = ClickPublisher(queue, max_pending=2, on_drop=lambda: dropped.append(1))  # type: ignore[arg-type]
    click = Click("abc", 1, datetime.now(UTC))
    for n in range(3):
        publisher.publish(click, f"m{n}")  # returns at once, though the queue is stuck
    assert publisher.pending == 2 and publisher.dropped == 1 and dropped == [1]
    queue.release.set()
    await publisher.flush()
    assert [mid for _, _, mid in queue.published] == ["m0", "m1"]
    assert {stream for stream, _, _ in queue.published} == {CLICK_STREAM}


async def test_a_failed_publish_is_counted_as_dropped() -> None:
    queue = SlowQueue(fail=True)
    publisher = ClickPublisher(queue)  # type: ignore[arg-type]
    publisher.publish(Click("abc", 1, datetime.now(UTC)), "m")
    queue.release.set()
    await publisher.flush()
    assert publisher.dropped == 1 and publisher.pending == 0


async def test_closing_waits_for_pending_clicks_up_to_a_timeout() -> None:
    queue = SlowQueue()
    publisher = ClickPublisher(queue)  # type: ignore[arg-type]
    publisher.publish(Click("abc", 1, datetime.now(UTC)), "m")
    await publisher.aclose(timeout=0.05)  # the queue never answers: given up
    await asyncio.sleep(0)
    assert publisher.pending == 0 and not queue.published
