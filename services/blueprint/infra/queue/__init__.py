"""Redis Streams work queue: consumer groups, at-least-once delivery acknowledged after
the handler commits, takeover of a crashed consumer's messages (XAUTOCLAIM), delayed
retries with exponential backoff, a dead-letter stream, priorities, idempotency by
message id; plus pub/sub events. `blueprint work NAME` runs consumers (`runtime.py`).

    queue = WorkQueue(redis, prefix="blueprint")
    await queue.publish("clicks", {"code": "abc"}, priority=Priority.LOW)
"""

from blueprint.infra.queue.consumer import (
    BatchHandler,
    Consumer,
    ConsumerOptions,
    Handler,
    PermanentError,
)
from blueprint.infra.queue.events import Events, Subscription
from blueprint.infra.queue.message import Message, Priority
from blueprint.infra.queue.metrics import QueueMetrics
from blueprint.infra.queue.queue import DeadLetter, WorkQueue
from blueprint.infra.queue.retry import RetryPolicy
from blueprint.infra.queue.scheduler import promote_due_forever

__all__ = [
    "BatchHandler",
    "Consumer",
    "ConsumerOptions",
    "DeadLetter",
    "Events",
    "Handler",
    "Message",
    "PermanentError",
    "Priority",
    "QueueMetrics",
    "RetryPolicy",
    "Subscription",
    "WorkQueue",
    "promote_due_forever",
]
