"""The example service's Alembic env: what every service's migrations/env.py holds."""

from blueprint.infra.sql.migrations import run_migrations

run_migrations(target_metadata=None)
