"""The shortener's Alembic env; `blueprint migrate shortener` runs it on every shard."""

from blueprint.infra.sql.migrations import run_migrations
from blueprint.shortener.models import Base

run_migrations(target_metadata=Base.metadata)
