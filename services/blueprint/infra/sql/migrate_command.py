"""`blueprint migrate NAME`: bring a service's databases (every shard) to a revision."""

from __future__ import annotations

import argparse
import asyncio
import sys

EXIT_FAILED = 1
EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "migrate", help="run a service's database migrations on every shard"
    )
    parser.add_argument("service", help="service name, e.g. shortener")
    parser.add_argument("--revision", default="head", help="target revision (default: head)")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from alembic.util import CommandError
    from sqlalchemy.exc import DBAPIError

    from blueprint.infra.sql.migrations import MigrationsNotFound, migrate_from_settings
    from blueprint.mesh.settings import load_or_exit

    settings = load_or_exit()
    try:
        results = asyncio.run(migrate_from_settings(settings, args.service, revision=args.revision))
    except (MigrationsNotFound, ValueError, CommandError) as error:
        # Bad name, no migrations, bad URL or settings, unknown revision: the user's to fix.
        print(f"blueprint migrate: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, TimeoutError) as error:
        print(f"blueprint migrate: database unreachable: {error}", file=sys.stderr)
        return EXIT_FAILED
    except DBAPIError as error:
        # The driver's words, without the statement and parameters SQLAlchemy appends.
        reason = str(error.orig).strip() or type(error.orig).__name__
        print(f"blueprint migrate: database error: {reason}", file=sys.stderr)
        return EXIT_FAILED
    for result in results:
        print(f"{args.service} {result.shard} {result.url}: at {result.revision or 'base'}")
    return 0
