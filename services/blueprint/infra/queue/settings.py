"""Queue consumer parameters, derived from the shared settings."""

from __future__ import annotations

from blueprint.infra.queue.consumer import ConsumerOptions
from blueprint.infra.queue.retry import RetryPolicy
from blueprint.mesh.settings import Settings


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        base_seconds=settings.queue_retry_base_seconds,
        max_seconds=max(settings.queue_retry_max_seconds, settings.queue_retry_base_seconds),
        jitter=settings.queue_retry_jitter,
        max_deliveries=settings.queue_max_deliveries,
    )


def consumer_options(settings: Settings) -> ConsumerOptions:
    return ConsumerOptions(
        visibility_timeout_seconds=settings.queue_visibility_timeout_seconds,
        block_seconds=settings.queue_block_seconds,
        processed_ttl_seconds=settings.queue_processed_ttl_seconds,
        handler_timeout_seconds=settings.queue_handler_timeout_seconds,
        batch_size=settings.queue_batch_size,
        batch_max_wait_seconds=settings.queue_batch_max_wait_seconds,
    )
