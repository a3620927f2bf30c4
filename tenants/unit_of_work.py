"""The tenant-scoped unit of work: one transaction that begins with `SET LOCAL search_path`.

`SET LOCAL` lasts until the transaction ends, so a pooled connection goes back to the pool with its
default `search_path = shared`, whatever happened inside (a session-level SET would leak the tenant to
the next borrower: django-tenants #1112). This module and `tenants.migrate` are the only code that
names `search_path`.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import asyncpg
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model
from tortoise.transactions import in_transaction

from tenants.context import (
    OutsideTenantScope,
    TenantRef,
    _current_tenant,
    _current_unit,
    current_tenant,
)
from tenants.schema_names import tenant_search_path

T = TypeVar("T")


class TenantModel(Model):
    """Base of every model whose table lives in the tenant schemas."""

    class Meta:
        abstract = True

    @classmethod
    def _choose_db(cls, for_write: bool = False) -> BaseDBAsyncClient:
        current_tenant()  # raises OutsideTenantScope when no unit of work is open
        return super()._choose_db(for_write)


@asynccontextmanager
async def tenant_transaction(tenant: TenantRef) -> AsyncIterator[BaseDBAsyncClient]:
    """Open the unit of work of `tenant`; a nested call for the same tenant joins the open one."""
    active = _current_tenant.get()
    if active is not None:
        if active.schema_name != tenant.schema_name:
            raise OutsideTenantScope("a unit of work for another tenant is already open")
        async with in_transaction("default") as joined:
            yield joined
        return
    async with in_transaction("default") as connection:
        await connection.execute_script(f"SET LOCAL search_path TO {tenant_search_path(tenant.schema_name)}")
        token = _current_tenant.set(tenant)
        unit = _current_unit.set(object())
        try:
            yield connection
        finally:
            _current_unit.reset(unit)
            _current_tenant.reset(token)


def is_stale_cached_statement(exc: BaseException) -> bool:
    """True when asyncpg's prepared statement went stale after a migration changed a table."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, asyncpg.exceptions.InvalidCachedStatementError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def run_in_tenant(tenant: TenantRef, work: Callable[[], Awaitable[T]]) -> T:
    """Run `work` in one unit of work of `tenant`, retried once if a cached statement went stale."""
    try:
        async with tenant_transaction(tenant):
            return await work()
    except Exception as exc:
        if not is_stale_cached_statement(exc):
            raise
    async with tenant_transaction(tenant):
        return await work()


@asynccontextmanager
async def savepoint() -> AsyncIterator[None]:
    """A nested step of the open unit of work that can fail (e.g. on a unique index) without
    aborting the whole transaction."""
    current_tenant()
    async with in_transaction("default"):
        yield
