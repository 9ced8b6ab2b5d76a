"""Which queue handlers `blueprint work NAME` can run.

A service that consumes a queue exposes a `HandlerSpec` (usually as `SPEC` in its
`worker.py`) and adds one line to `WORKERS`. More names can be given at run time with
`BLUEPRINT_WORKER_HANDLERS='{"NAME": "module:attribute"}'` (tests use this). Specs are
imported only when asked for, so one worker does not load every service's code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import redis.asyncio as aioredis

from blueprint.infra.queue.consumer import BatchHandler, Handler
from blueprint.infra.queue.keys import check_name
from blueprint.infra.queue.queue import WorkQueue
from blueprint.infra.queue.retry import RetryPolicy
from blueprint.mesh.settings import Settings

# NAME -> "module:attribute" of a HandlerSpec.
WORKERS: dict[str, str] = {
    "shortener-clicks": "blueprint.shortener.worker:SPEC",
}


@dataclass(frozen=True)
class WorkerContext:
    """What a handler factory receives: who it is, settings, and the connections."""

    name: str
    instance_id: str
    settings: Settings
    redis: aioredis.Redis
    queue: WorkQueue


# Builds the handler when the worker starts and cleans up (engines, clients) when it stops.
# A factory may yield a BatchHandler: the worker then hands it batches (consumer.py).
HandlerFactory = Callable[[WorkerContext], AbstractAsyncContextManager[Handler | BatchHandler]]


@dataclass(frozen=True)
class HandlerSpec:
    stream: str
    group: str
    factory: HandlerFactory
    retry: RetryPolicy | None = None  # None: from settings (BLUEPRINT_QUEUE_RETRY_*)

    def __post_init__(self) -> None:
        check_name("stream name", self.stream)
        check_name("group name", self.group)


class UnknownWorker(LookupError):
    def __init__(self, name: str, known: Mapping[str, str]) -> None:
        names = ", ".join(sorted(known)) or "none registered"
        super().__init__(f"unknown worker {name!r}; workers: {names}")


class BadHandlerPath(ValueError):
    """A registered "module:attribute" that does not lead to a HandlerSpec."""


def load(name: str, extra: Mapping[str, str] | None = None) -> HandlerSpec:
    known = {**WORKERS, **(extra or {})}
    path = known.get(name)
    if path is None:
        raise UnknownWorker(name, known)
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise BadHandlerPath(f"worker {name!r}: {path!r} is not 'module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BadHandlerPath(f"worker {name!r}: cannot import {module_name!r}: {exc}") from exc
    spec = getattr(module, attribute, None)
    if not isinstance(spec, HandlerSpec):
        found = "nothing" if spec is None else type(spec).__name__
        raise BadHandlerPath(f"worker {name!r}: {path} is {found}, not a HandlerSpec")
    return spec
