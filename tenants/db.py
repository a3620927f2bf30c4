"""The one connection pool of a process, configured through Tortoise.

Pooled connections default to `search_path = shared`: a tenant table named outside a unit of work then
does not resolve at all instead of silently resolving to some other tenant's schema.
"""

from dataclasses import dataclass
from urllib.parse import unquote, urlparse

import asyncpg
from tortoise import Tortoise, connections
from tortoise.backends.base.client import BaseDBAsyncClient

from tenants.schema_names import SHARED_SCHEMA

ORM_APPS = {
    "shared": {
        "models": [
            "tenants.models",
            "compliance.identity.account_models",
            "compliance.identity.signing_key_model",
            "compliance.identity.client_models",
            "compliance.identity.authorization_models",
        ],
        "default_connection": "default",
    },
    "tenant": {"models": ["care.models"], "default_connection": "default"},
}


@dataclass(frozen=True)
class PoolSettings:
    min_size: int = 2
    max_size: int = 20
    # A connection caches catalog entries for every schema it touched (~10 KB per table): with 1,500
    # schemas that grows without bound unless connections are recycled.
    max_queries: int = 20_000
    max_inactive_connection_lifetime: float = 120.0
    statement_cache_size: int = 200


def asyncpg_dsn(database_url: str) -> str:
    """asyncpg only knows the postgresql:// and postgres:// schemes; tortoise spells it asyncpg:// too."""
    scheme, sep, rest = database_url.partition("://")
    if scheme in {"asyncpg", "postgres", "postgresql"}:
        return f"postgresql{sep}{rest}"
    raise ValueError(f"not a PostgreSQL URL: {scheme}://…")


def connection_credentials(database_url: str) -> dict[str, object]:
    url = urlparse(asyncpg_dsn(database_url))
    return {
        "host": url.hostname or "127.0.0.1",
        "port": url.port or 5432,
        "user": unquote(url.username or "postgres"),
        "password": unquote(url.password) if url.password else None,
        "database": (url.path or "/postgres").lstrip("/") or "postgres",
    }


class PooledConnection(asyncpg.connection.Connection):
    """A pool connection released without asyncpg's reset query (`pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL;`): a round trip on every release, 0.09 ms of the API's CPU per request in the
    benchmark's profile, plus the server's. Nothing of ours leaves session state on a pooled connection:
    the tenant is `SET LOCAL` (tenants/unit_of_work.py), key creation takes transaction-level advisory
    locks, migrations use connections of their own, and the demo seeding releases its session lock in a
    `finally`. asyncpg still rolls back a transaction left open and drops listeners on release."""

    def get_reset_query(self) -> str:
        return ""


def orm_config(database_url: str, pool: PoolSettings = PoolSettings()) -> dict[str, object]:
    credentials = connection_credentials(database_url) | {
        "minsize": pool.min_size,
        "maxsize": pool.max_size,
        "max_queries": pool.max_queries,
        "max_inactive_connection_lifetime": pool.max_inactive_connection_lifetime,
        "statement_cache_size": pool.statement_cache_size,
        "connection_class": PooledConnection,
        "server_settings": {"search_path": SHARED_SCHEMA, "application_name": "yiyang"},
    }
    return {
        "connections": {"default": {"engine": "tortoise.backends.asyncpg", "credentials": credentials}},
        "apps": ORM_APPS,
        "use_tz": True,
        "timezone": "UTC",
    }


async def open_database(database_url: str, pool: PoolSettings = PoolSettings()) -> None:
    # The global fallback makes the ORM visible to every task of the process (uvicorn runs the
    # lifespan and each request in different tasks).
    await Tortoise.init(config=orm_config(database_url, pool), _enable_global_fallback=True)


async def close_database() -> None:
    await Tortoise.close_connections()


def default_connection() -> BaseDBAsyncClient:
    return connections.get("default")


def pool_usage() -> tuple[int, int, int]:
    """(open connections, idle connections, maximum) of the pool, for /metrics."""
    client = default_connection()
    pool = getattr(client, "_pool", None)
    if pool is None:
        return (0, 0, getattr(client, "pool_maxsize", 0))
    return (pool.get_size(), pool.get_idle_size(), pool.get_max_size())
