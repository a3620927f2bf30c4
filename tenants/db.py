"""The one connection pool of a process, configured through Tortoise.

Pooled connections default to `search_path = shared`: a tenant table named outside a unit of work then
does not resolve at all instead of silently resolving to some other tenant's schema.

The pool logs in as the application's role `yiyang_app`, not as the DATABASE_URL user that owns the
schemas: it may read and write the tables but cannot alter them, and may only append to the audit tables
(docs/security.md, "The application's database role"). Provisioning a tenant creates a schema, so it takes
a connection of the owner (`owner_connection`), as migrations do.
"""

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlparse, urlsplit, urlunsplit

import asyncpg
from tortoise import Tortoise, connections
from tortoise.backends.base.client import BaseDBAsyncClient

from tenants.schema_names import SHARED_SCHEMA

# Created and granted by migrations/shared/0010 and migrations/tenant/0017.
APP_ROLE = "yiyang_app"
APP_DATABASE_URL_VARIABLE = "YIYANG_APP_DATABASE_URL"

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


def database_url_with_user(database_url: str, user: str) -> str:
    """The same server, database and options, logged in as `user` without a password."""
    url = urlsplit(database_url)
    host = url.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(user, safe='')}@{host}" + (f":{url.port}" if url.port else "")
    return urlunsplit((url.scheme, netloc, url.path, url.query, url.fragment))


def app_database_url(database_url: str, environ: Mapping[str, str] = os.environ) -> str:
    """How the pool of the database at `database_url` (the owner's URL) logs in as the application role.

    YIYANG_APP_DATABASE_URL when it is set and `database_url` is the DATABASE_URL it goes with (it carries
    the role's password in production); otherwise the owner's URL with the user replaced by `yiyang_app`
    and no password, which is what trust (or certificate) authentication needs: the embedded PostgreSQL,
    this machine's server, and the scratch databases of tests and benchmarks.
    """
    explicit = environ.get(APP_DATABASE_URL_VARIABLE)
    if explicit and database_url == environ.get("DATABASE_URL"):
        return explicit
    return database_url_with_user(database_url, APP_ROLE)


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


class ApplicationRoleUnavailable(RuntimeError):
    """The pool cannot log in as the application role."""


_owner_url: str | None = None


async def open_database(database_url: str, pool: PoolSettings = PoolSettings()) -> None:
    """Open the pool on the database at `database_url` (the owner's URL, DATABASE_URL), logged in as the
    application role (`app_database_url`). The migrations must have run: they create the role."""
    global _owner_url
    pool_url = app_database_url(database_url)
    # The global fallback makes the ORM visible to every task of the process (uvicorn runs the
    # lifespan and each request in different tasks).
    await Tortoise.init(config=orm_config(pool_url, pool), _enable_global_fallback=True)
    _owner_url = database_url
    try:
        await default_connection().execute_query("SELECT 1")
    except asyncpg.InvalidAuthorizationSpecificationError as refused:  # no such role, bad password
        await close_database()
        user = connection_credentials(pool_url)["user"]
        raise ApplicationRoleUnavailable(
            f"the application's database role {user!r} cannot log in ({refused}): run `yiyang migrate`,"
            f" which creates {APP_ROLE}, and where the server asks for a password set"
            f" {APP_DATABASE_URL_VARIABLE} (docs/security.md, The application's database role)"
        ) from None


async def close_database() -> None:
    global _owner_url
    _owner_url = None
    await Tortoise.close_connections()


@asynccontextmanager
async def owner_connection() -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own as the owner of the schemas (DATABASE_URL), for what the application role
    may not do: creating a tenant's schema. Opened per use: provisioning is rare, and a pool of owner
    connections would hold the owner's privileges open in every process."""
    if _owner_url is None:
        raise RuntimeError("the database is not open (open_database)")
    connection = await asyncpg.connect(
        asyncpg_dsn(_owner_url),
        server_settings={"search_path": SHARED_SCHEMA, "application_name": "yiyang-owner"},
    )
    try:
        yield connection
    finally:
        await connection.close()


def default_connection() -> BaseDBAsyncClient:
    return connections.get("default")


def pool_usage() -> tuple[int, int, int]:
    """(open connections, idle connections, maximum) of the pool, for /metrics."""
    client = default_connection()
    pool = getattr(client, "_pool", None)
    if pool is None:
        return (0, 0, getattr(client, "pool_maxsize", 0))
    return (pool.get_size(), pool.get_idle_size(), pool.get_max_size())
