"""`blueprint work NAME`: the command line of the queue worker runtime (`queue/runtime.py`).

`register(subparsers)` adds the command to `blueprint`; everything heavy is imported
only when the command runs, so other commands start fast.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

EXIT_USAGE = 2


def _work(args: argparse.Namespace) -> int:
    from blueprint.infra.queue.registry import BadHandlerPath, UnknownWorker, load
    from blueprint.infra.queue.runtime import consumer_prefix, work
    from blueprint.local import state
    from blueprint.mesh import logs
    from blueprint.mesh.settings import load_or_exit

    settings = load_or_exit()
    try:
        spec = load(args.name, settings.worker_handlers)
    except (UnknownWorker, BadHandlerPath) as error:
        print(f"blueprint work: {error.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    concurrency = settings.worker_concurrency if args.concurrency is None else args.concurrency
    if not 1 <= concurrency <= 256:
        print(f"blueprint work: --concurrency must be 1-256, got {concurrency}", file=sys.stderr)
        return EXIT_USAGE
    redis_url = state.redis_url(settings)
    if redis_url is None:
        print(
            "blueprint work: no Redis: set BLUEPRINT_REDIS_URL or start `blueprint up`",
            file=sys.stderr,
        )
        return EXIT_USAGE
    logs.configure(args.name, consumer_prefix(args.name, settings.instance_id))
    return asyncio.run(
        work(args.name, spec, settings, redis_url=redis_url, concurrency=concurrency)
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `work NAME` to the `blueprint` command."""
    work_parser = subparsers.add_parser(
        "work", help="run a queue consumer in the foreground, until SIGTERM"
    )
    work_parser.add_argument("name", help="worker name (see blueprint.infra.queue.registry)")
    work_parser.add_argument(
        "--concurrency", type=int, default=None,
        help="messages handled at once (default: BLUEPRINT_WORKER_CONCURRENCY, 4)",
    )  # fmt: skip
    work_parser.set_defaults(run=_work)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m blueprint.infra.worker work NAME`, the same as `blueprint work NAME`."""
    parser = argparse.ArgumentParser(prog="blueprint")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
