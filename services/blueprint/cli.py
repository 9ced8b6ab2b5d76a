"""The `blueprint` command: serve a service, run the mesh, call it, look at it.

Only argparse is imported up front: each command imports what it needs when it runs,
so `blueprint --help` and `blueprint call` start in a fraction of a second
(tests/unit/test_cli_imports.py keeps it so).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from blueprint.mesh.settings import Settings

EXIT_USAGE = 2
EXIT_RPC_FAILED = 1


def _settings() -> Settings:
    from blueprint.mesh.settings import load_or_exit

    return load_or_exit()


def _serve(args: argparse.Namespace) -> int:
    from blueprint import catalog
    from blueprint.local import state
    from blueprint.mesh import eventloop, logs
    from blueprint.mesh.server import CannotBind, serve

    settings = _settings()
    try:
        spec = catalog.spec(args.service)
    except catalog.UnknownService as error:
        print(f"blueprint serve: {error}", file=sys.stderr)
        return EXIT_USAGE
    name = settings.register_as or spec.name
    logs.configure(name, settings.instance_id or name)
    try:
        eventloop.run(
            serve(spec, settings, redis_url=state.redis_url(settings)), settings.event_loop
        )
    except CannotBind as error:
        print(f"blueprint serve: {error} (BLUEPRINT_BIND_HOST/BLUEPRINT_PORT)", file=sys.stderr)
        return 1
    return 0


def _up(args: argparse.Namespace) -> int:
    import logging

    from blueprint.local import up

    logging.basicConfig(level=logging.WARNING)
    return asyncio.run(up.run(_settings()))


def _call(args: argparse.Namespace) -> int:
    from blueprint.local import invoke

    try:
        target = invoke.resolve(args.service, args.method)
        request = invoke.parse_request(target, invoke.read_body(args.body, sys.stdin))
        metadata = [_header(h) for h in args.header]
    except invoke.CallError as error:
        print(f"blueprint call: {error}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_call_async(args, target, request, metadata))


def _header(text: str) -> tuple[str, str]:
    from blueprint.local.invoke import CallError

    name, sep, value = text.partition("=")
    if not sep or not name:
        raise CallError(f"header {text!r} is not NAME=VALUE")
    return name.strip().lower(), value


async def _call_async(
    args: argparse.Namespace, target: object, request: object, metadata: list[tuple[str, str]]
) -> int:
    import grpc.aio

    from blueprint.local import invoke, state
    from blueprint.mesh.client import MeshClient
    from blueprint.mesh.discovery import open_registry

    settings = _settings()
    registry = open_registry(settings, redis_url=state.redis_url(settings))
    mesh = MeshClient(settings, registry)
    try:
        async for response in invoke.call(
            mesh,
            args.service,
            target,
            request,
            timeout=args.timeout,
            metadata=metadata,  # type: ignore[arg-type]
        ):
            print(invoke.to_json(response), flush=True)
        return 0
    except invoke.CallError as error:
        print(f"blueprint call: {error}", file=sys.stderr)
        return EXIT_USAGE
    except grpc.aio.AioRpcError as error:
        print(f"blueprint call: {invoke.describe_error(error)}", file=sys.stderr)
        return EXIT_RPC_FAILED
    finally:
        await mesh.close()
        await registry.close()


def _status(args: argparse.Namespace) -> int:
    from blueprint.local import state, status
    from blueprint.mesh.discovery import open_registry

    settings = _settings()

    async def run() -> str:
        registry = open_registry(settings, redis_url=state.redis_url(settings))
        try:
            return await status.report(registry)
        finally:
            await registry.close()

    print(asyncio.run(run()))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="blueprint", description="Blueprint: a system-design guide as a running gRPC mesh."
    )
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run one service (one replica) in the foreground")
    serve.add_argument("service")
    serve.set_defaults(run=_serve)

    up = commands.add_parser("up", help="run every service as replicas, until Ctrl-C")
    up.set_defaults(run=_up)

    call = commands.add_parser("call", help="call a method through discovery and the balancer")
    call.add_argument("service", help="discovery name, e.g. diag")
    call.add_argument("method", help="method name, e.g. Echo")
    call.add_argument(
        "body", nargs="?", default=None,
        help="request as JSON; @FILE reads it from a file, - (or @) from stdin; "
        "none: stdin when it is not a terminal, else {}",
    )  # fmt: skip
    call.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    call.add_argument(
        "-H", "--header", action="append", default=[], metavar="NAME=VALUE",
        help="request metadata, e.g. -H x-blueprint-hash-key=user42",
    )  # fmt: skip
    call.set_defaults(run=_call, exit_at_once=True)

    status = commands.add_parser("status", help="list the instances in discovery")
    status.set_defaults(run=_status)

    # Commands that live with what they operate on.
    from blueprint.deploy import rollout
    from blueprint.infra import worker
    from blueprint.infra.sql import migrate_command

    migrate_command.register(commands)
    worker.register(commands)
    rollout.register(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.run(args)
    if argv is None and getattr(args, "exit_at_once", False):
        # As the `blueprint` command: the call closed all it opened, and the interpreter's
        # teardown (grpc core joining its threads, module cleanup) would add ~0.1 s.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
